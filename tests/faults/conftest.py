"""Fixtures of the fault scenarios: their own database (so nothing else in the suite shares
their ledger), a Reaper that stops every process and private server a scenario started, and
the environment of a wallet subprocess.

Knobs (environment): FAULTS_SECONDS, traffic seconds per scenario (default 6; the soak
variant uses 60); FAULTS_CLIENTS, concurrent clients (default 16); FAULTS_RESULTS, the
JSON-lines results file (default <tmp>/wallet-faults/results.jsonl).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway_bridge.server import migrate_database
from loadtests.ports import lease_port
from service_kit.migrations import migrate
from tests.conftest import _with_path, fresh_database
from tests.faults.processes import Proc, Reaper, start_wallet, wallet_proc
from tests.faults.verify import Report
from tests.helpers import CALLERS_JSON
from wallet_core.db import connect
from wallet_core.server import MIGRATIONS


def traffic_seconds() -> float:
    return float(os.environ.get("FAULTS_SECONDS", "6"))


def traffic_clients() -> int:
    return int(os.environ.get("FAULTS_CLIENTS", "16"))


async def create_database(admin_url: str, name: str) -> str:
    """Recreate database `name` with the wallet and bridge schemas; returns its URL."""
    url = await fresh_database(admin_url, name)
    conn = await connect(url)
    try:
        await migrate(conn, schema="wallet", folder=MIGRATIONS)
    finally:
        await conn.close()
    await migrate_database(url)
    return url


@pytest.fixture(scope="session")
async def faults_database_url() -> str:
    base = os.environ.get("DATABASE_URL")
    if not base:
        pytest.exit("DATABASE_URL is not set: run the tests with `make test`", returncode=2)
    name = os.environ.get("WALLET_TEST_DB", "wallet_test") + "_faults"
    return await create_database(base, name)


@pytest.fixture(scope="session")
def faults_redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.exit("REDIS_URL is not set: run the tests with `make test`", returncode=2)
    return _with_path(url, "/15")


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    r = Reaper()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path


def wallet_env(database_url: str, redis_url: str, **overrides: str) -> dict[str, str]:
    """A wallet subprocess's settings: small pool, quiet logs, short shutdown grace."""
    return {"DATABASE_URL": database_url, "REDIS_URL": redis_url,
            "WALLET_CALLERS": CALLERS_JSON, "WALLET_LOG_LEVEL": "WARNING",
            "WALLET_DB_POOL_SIZE_MIN": "2", "WALLET_DB_POOL_SIZE_MAX": "6",
            "WALLET_SHUTDOWN_GRACE_MS": "1000", **overrides}


@dataclass
class Scenario:
    """A scenario's run id (prefix of every key and player), report and start time."""

    name: str
    run_id: str
    report: Report
    started: float


def new_scenario(name: str) -> Scenario:
    return Scenario(name, f"f{uuid.uuid4().hex[:8]}", Report(name), time.monotonic())


async def one_wallet(env: dict[str, str], reaper: Reaper, log_dir: Path) -> tuple[Proc, int]:
    """A wallet subprocess on a free port, serving, killed at the end of the test."""
    port = lease_port()
    wallet = wallet_proc("wallet", env=env, port=port, log_dir=log_dir)
    reaper.add(wallet.kill)
    await start_wallet(wallet, port)
    return wallet, port
