"""Secrets never reach the logs: every log record of the test session is formatted with the
services' own JSON formatter (service_kit.logs) and searched for every secret the suite
configures (wallet tokens, cashier API keys, PSP API keys and webhook secrets).

The session handler is installed on the root logger by tests/conftest.py before the first
test and judged at session end (pytest_sessionfinish), so it sees the records of every test
and fails the run on a hit. Each record is scanned as it is emitted, so memory stays bounded
whatever the suite logs: only a tail of lines and the first findings are kept. Log files that
subprocess tests leave under pytest's temporary directory (`*.log`) are scanned at the end.

Findings name the secret (e.g. `TOKENS[game]`) and the logger, never the secret's value.
"""

from __future__ import annotations

import collections
import importlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from service_kit.logs import JsonFormatter

# Recent formatted lines kept for tests that check what was captured (~0.5 MiB).
TAIL_LINES_MAX = 2000
# Findings kept for the report; one is enough to fail, the rest help to find the source.
FINDINGS_MAX = 100
# Log files larger than this are scanned in their first part only (subprocess logs are small).
LOG_FILE_BYTES_MAX = 64 * 1024 * 1024
# Names of PSP_ENV variables that hold secrets (the rest are URLs and account names).
_SECRET_ENV_HINTS = ("API_KEY", "SECRET", "HMAC_KEY")


@dataclass(frozen=True, slots=True)
class Finding:
    secret_name: str
    source: str  # logger name, or a log file's path


def configured_secrets() -> dict[str, str]:
    """Every secret the suite configures, by a name that is safe to print."""
    helpers = importlib.import_module("tests.helpers")
    bridge = importlib.import_module("tests.bridge.conftest")
    found = {f"TOKENS[{scope}]": token for scope, token in helpers.TOKENS.items()}
    found["API_KEY"] = bridge.API_KEY
    found["OTHER_API_KEY"] = bridge.OTHER_API_KEY
    found.update({f"PSP_ENV[{name}]": value for name, value in bridge.PSP_ENV.items()
                  if any(hint in name for hint in _SECRET_ENV_HINTS)})
    return found


def secrets_in(text: str, secrets: Mapping[str, str]) -> list[str]:
    """Names of the secrets that occur in `text` (case-insensitive: hex keys change case)."""
    lowered = text.lower()
    return [name for name, value in secrets.items() if value.lower() in lowered]


class SecretScanningHandler(logging.Handler):
    """Formats each record as the services would write it and records secret hits."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        super().__init__(level=logging.NOTSET)
        if not secrets or any(len(v) < 8 for v in secrets.values()):
            raise ValueError("secrets: a non-empty mapping of values of 8+ characters")
        self.secrets = dict(secrets)
        self.setFormatter(JsonFormatter())
        self.lines_seen = 0
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES_MAX)
        self.findings: list[Finding] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a record that cannot be formatted is reported, never lost
            self.handleError(record)
            line = f"{record.name} {record.msg!r} {record.args!r}"
        self.lines_seen += 1
        self.tail.append(line)
        for name in secrets_in(line, self.secrets):
            self._found(Finding(name, record.name))

    def scan_files(self, paths: Iterable[Path]) -> int:
        """Scan log files (bounded read each); returns how many were read."""
        count = 0
        for path in paths:
            try:
                with path.open("rb") as f:
                    text = f.read(LOG_FILE_BYTES_MAX).decode(errors="replace")
            except OSError:
                continue
            count += 1
            for name in secrets_in(text, self.secrets):
                self._found(Finding(name, str(path)))
        return count

    def _found(self, finding: Finding) -> None:
        if len(self.findings) < FINDINGS_MAX:
            self.findings.append(finding)


# The session's handler, set by tests/conftest.py (None when the hooks did not run).
SESSION_HANDLER: SecretScanningHandler | None = None


def install() -> SecretScanningHandler:
    """Attach a scanning handler to the root logger for the whole session.

    The services log at INFO by default (WALLET_LOG_LEVEL / BRIDGE_LOG_LEVEL), and their
    access lines are INFO: the root level is lowered to INFO so those records exist at all
    (pytest leaves it at WARNING); our own packages go down to DEBUG.
    """
    global SESSION_HANDLER
    handler = SecretScanningHandler(configured_secrets())
    root = logging.getLogger()
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    for package in ("wallet_core", "gateway_bridge", "service_kit", "loadtests"):
        logging.getLogger(package).setLevel(logging.DEBUG)
    SESSION_HANDLER = handler
    return handler


def verdict(handler: SecretScanningHandler, log_dirs: Iterable[Path]) -> list[str]:
    """Problems to fail the run with (empty: clean). Scans `*.log` under `log_dirs` first."""
    files = [p for d in log_dirs if d.is_dir() for p in sorted(d.rglob("*.log"))]
    handler.scan_files(files)
    problems = [f"secret {f.secret_name} appeared in the logs of {f.source}"
                for f in handler.findings]
    if handler not in logging.getLogger().handlers:
        problems.append("the session's log capture handler was removed from the root logger "
                        "(service_kit.logs.configure() in-process?): the logs were not all "
                        "scanned")
    return problems
