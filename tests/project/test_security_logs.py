"""The secrets-in-logs scan (tests/log_capture.py) sees the suite's logs and really fails.

The scan itself runs at session end (tests/conftest.py, pytest_sessionfinish) over every
record of the run; these tests prove its parts: that the session handler receives the
services' records, that a logged secret is flagged whatever way it is logged, and that a
run in which a test logs a configured secret exits non-zero without printing the secret.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from wallet.v1 import wallet_service_pb2 as pb

from service_kit.logs import JsonFormatter
from tests import log_capture
from tests.helpers import TOKENS, Client, md

ROOT = Path(__file__).resolve().parents[2]
FAKE_SECRET = "fake-configured-secret-0123456789"
CANARY_ENV = "WALLET_TEST_LOG_CANARY"


@pytest.fixture
def isolated_scanner() -> tuple[logging.Logger, log_capture.SecretScanningHandler]:
    """A separate handler on a logger that does not propagate, so the fake secret it logs
    never reaches the session's handler (which would fail this very run)."""
    handler = log_capture.SecretScanningHandler({"FAKE": FAKE_SECRET})
    logger = logging.getLogger(f"tests.canary.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger, handler


def test_the_scanner_flags_a_secret_however_it_is_logged(
        isolated_scanner: tuple[logging.Logger, log_capture.SecretScanningHandler]) -> None:
    """A secret in the message, an argument, an extra field or a traceback is flagged, by
    name; a clean record is not."""
    logger, handler = isolated_scanner
    logger.info("nothing to see", extra={"caller": "game-service"})
    assert handler.findings == [] and handler.lines_seen == 1
    logger.info("calling the PSP with %s", FAKE_SECRET.upper())
    logger.warning("retrying", extra={"header": f"Bearer {FAKE_SECRET}"})
    try:
        raise ValueError(f"bad key {FAKE_SECRET}")
    except ValueError:
        logger.exception("failed")
    assert [f.secret_name for f in handler.findings] == ["FAKE"] * 3
    assert all(f.source == logger.name for f in handler.findings)


def test_the_scanner_flags_a_secret_in_a_log_file(tmp_path: Path) -> None:
    """A subprocess log file holding a secret is flagged with its path."""
    handler = log_capture.SecretScanningHandler({"FAKE": FAKE_SECRET})
    (tmp_path / "clean.log").write_text('{"msg": "ok"}\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "wallet.log").write_text(f'{{"msg": "token {FAKE_SECRET}"}}\n')
    assert handler.scan_files(sorted(tmp_path.rglob("*.log"))) == 2
    assert handler.findings == [log_capture.Finding("FAKE", str(tmp_path / "sub/wallet.log"))]


def test_the_formatter_drops_secret_named_fields_so_the_scan_judges_real_output() -> None:
    """What is scanned is the services' JSON line: a field named like a secret is dropped
    by the formatter, a secret under another name is not."""
    record = logging.makeLogRecord({"msg": "x", "api_token": FAKE_SECRET, "other": "y"})
    line = JsonFormatter().format(record)
    assert FAKE_SECRET not in line and '"other":"y"' in line


def test_every_configured_secret_is_scanned_for() -> None:
    """The session scans for every wallet token, cashier key and PSP key/secret."""
    handler = log_capture.SESSION_HANDLER
    assert handler is not None, "tests/conftest.py did not install the log capture"
    names = set(handler.secrets)
    assert {f"TOKENS[{s}]" for s in TOKENS} <= names
    assert {"API_KEY", "OTHER_API_KEY", "PSP_ENV[BRIDGE_STRIPE_WEBHOOK_SECRET]",
            "PSP_ENV[BRIDGE_ADYEN_HMAC_KEY]", "PSP_ENV[BRIDGE_NOWPAYMENTS_IPN_SECRET]",
            "PSP_ENV[BRIDGE_STRIPE_API_KEY]"} <= names
    assert "PSP_ENV[BRIDGE_ADYEN_MERCHANT_ACCOUNT]" not in names  # not a secret


async def test_the_session_handler_sees_the_wallets_access_log(client: Client,
                                                               player: str) -> None:
    """A real call's INFO access line (its request id) reaches the session's handler, so
    the end-of-session scan covers what the services log during other tests."""
    handler = log_capture.SESSION_HANDLER
    assert handler is not None
    before = handler.lines_seen
    request_id = f"logscan-{uuid.uuid4().hex}"
    with pytest.raises(grpc.aio.AioRpcError):  # any answer will do; NOT_FOUND is expected
        await client.stub.GetBalance(pb.GetBalanceRequest(player_id=player, currency="USD"),
                                     metadata=[*md("read"), ("x-request-id", request_id)],
                                     timeout=5)
    assert handler.lines_seen > before
    assert any(request_id in line and '"logger":"wallet_core.access"' in line
               for line in handler.tail)


@pytest.mark.skipif(os.environ.get(CANARY_ENV) != "1",
                    reason=f"run only by the test below ({CANARY_ENV}=1)")
def test_canary_logs_a_configured_secret() -> None:
    """Canary: logs a real configured token as a careless service would."""
    logging.getLogger("wallet_core.access").info("rpc", extra={
        "header": f"Bearer {TOKENS['game']}"})


@pytest.mark.slow
def test_a_run_that_logs_a_configured_secret_fails(tmp_path: Path) -> None:
    """A pytest run whose only test passes but logs a configured token exits 1, names the
    token, and does not print its value."""
    env = {**os.environ, CANARY_ENV: "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path / "basetemp"),
         f"{Path(__file__).relative_to(ROOT)}::test_canary_logs_a_configured_secret"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    output = proc.stdout + proc.stderr
    assert "1 passed" in output, output
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "secret TOKENS[game] appeared in the logs of wallet_core.access" in output, output
    assert TOKENS["game"] not in output
