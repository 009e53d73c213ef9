"""The infrastructure checks (`make infra-check`, docs/SCALING.md): the wallet and the bridge on
real engines started by the checks themselves on loopback (a Postgres primary with a
synchronous or asynchronous standby, PgBouncer in transaction mode, a six-node Redis Cluster,
Debian's Prometheus). They need packages `make test` does not (scripts/infra-check.sh installs
them) and minutes of load, so the suite collects them only when INFRA_CHECK=1.

Each check appends one JSON line to $INFRA_RESULTS: its name, whether it passed, and the
figures it measured; scripts/infra-check.sh prints them as the results table.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

# The fault scenarios' fixtures: a Reaper that stops everything a check started, the log
# directory, and the Redis database the scenarios use.
from tests.faults.conftest import faults_redis_url, log_dir, reaper

__all__ = ["Results", "faults_redis_url", "log_dir", "reaper"]

if os.environ.get("INFRA_CHECK") != "1":
    collect_ignore_glob = ["test_*.py"]


class Results:
    """One check's row of the results table: figures added as they are measured, written
    once at the end (with passed=False if the check failed before it said otherwise)."""

    def __init__(self, check: str) -> None:
        self.check = check
        self.figures: dict[str, Any] = {}
        self.passed = False
        self._started = time.monotonic()

    def add(self, **figures: Any) -> None:
        self.figures.update(figures)

    def write(self) -> None:
        path = Path(os.environ.get("INFRA_RESULTS", "/tmp/wallet-infra-results.jsonl"))
        path.parent.mkdir(parents=True, exist_ok=True)
        row = {"check": self.check, "passed": self.passed,
               "seconds": round(time.monotonic() - self._started, 1), "figures": self.figures}
        with path.open("ab") as f:
            f.write(orjson.dumps(row) + b"\n")


@pytest.fixture
def results(request: pytest.FixtureRequest) -> Iterator[Results]:
    """The check's results row, named after the test (its docstring's first line)."""
    doc = (request.function.__doc__ or request.node.name).strip().splitlines()[0]
    r = Results(doc.rstrip("."))
    try:
        yield r
    finally:
        r.write()
