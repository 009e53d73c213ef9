"""The dependency audit's verdict (scripts/audit_report.py): vulnerabilities fail, an
unreachable database is said plainly and passes, a clean audit passes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _audit_report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_report",
                                                  ROOT / "scripts" / "audit_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(*dependencies: dict[str, object]) -> str:
    return json.dumps({"dependencies": list(dependencies), "fixes": []})


CLEAN = {"name": "aiohttp", "version": "3.14.5", "vulns": []}
VULNERABLE = {"name": "aiohttp", "version": "3.9.0", "vulns": [
    {"id": "PYSEC-2024-24", "fix_versions": ["3.9.2"], "aliases": [], "description": ""}]}
NOT_FOUND = {"name": "aiohttp", "skip_reason": "Dependency not found on PyPI and could not "
                                               "be audited: aiohttp (3.14.5)"}


@pytest.mark.parametrize(("report", "stderr", "code", "says"), [
    (_report(CLEAN), "", 0, "no known vulnerabilities in 1 audited"),
    (_report(CLEAN, VULNERABLE), "", 1, "aiohttp==3.9.0: PYSEC-2024-24 (fixed in 3.9.2)"),
    (_report(NOT_FOUND, NOT_FOUND), "", 0, "database unreachable: none of 2"),
    ("", "requests.exceptions.ConnectionError: Failed to resolve 'x'", 0, "unreachable"),
    ("", "Traceback: KeyError 'boom'", 2, "no usable report"),
])
def test_audit_verdict(report: str, stderr: str, code: int, says: str) -> None:
    """Each pip-audit outcome maps to its exit code and a line that says what happened."""
    got_code, lines = _audit_report().verdict(report, stderr)
    assert got_code == code, lines
    assert any(says in line for line in lines), lines
