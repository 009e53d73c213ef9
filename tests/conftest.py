"""Shared fixtures: a fresh test database, Redis, and the real wallet server on loopback.

DATABASE_URL / REDIS_URL point at the servers `scripts/services.sh ensure` found or started.
Tests use their own database (WALLET_TEST_DB, default wallet_test, recreated per run) and
their own Redis database index (15), so a running demo wallet is never disturbed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis

from service_kit.migrations import migrate
from tests import layers, log_capture
from tests.helpers import CALLERS_JSON, Client
from wallet_core import config
from wallet_core.db import connect
from wallet_core.server import MIGRATIONS, Running, running
from wallet_core.storage.checker import check_ledger

# Problems found by the secrets-in-logs scan, from sessionfinish to the terminal summary.
_LOG_PROBLEMS = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    """Capture every log record of the session to scan it for secrets (tests/log_capture.py)."""
    for name, meaning in layers.MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")
    log_capture.install()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test takes the marker of its folder (tests/layers.py)."""
    for item in items:
        marker = layers.marker_for(item.path)
        if marker is not None and not item.get_closest_marker(marker):
            item.add_marker(marker)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture starts a server: a unit test asking for one is misfiled."""
    if item.get_closest_marker("unit") or os.environ.get("WALLET_TESTS_GUARD_ALL"):
        layers.refuse_server_fixtures(item)


@pytest.fixture(autouse=True)
def _unit_tests_stay_pure(request: pytest.FixtureRequest,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("unit") or os.environ.get("WALLET_TESTS_GUARD_ALL"):
        layers.refuse_io(monkeypatch)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a configured secret appeared in any log record or log file."""
    handler = log_capture.SESSION_HANDLER
    if handler is None:
        return
    # pytest's temporary directory, where subprocess tests leave their log files.
    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)
    problems = log_capture.verdict(handler, [basetemp] if basetemp else [])
    session.config.stash[_LOG_PROBLEMS] = problems
    if problems:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    handler = log_capture.SESSION_HANDLER
    problems = terminalreporter.config.stash.get(_LOG_PROBLEMS, [])
    if handler is None:
        return
    terminalreporter.write_line(f"secrets in logs: {handler.lines_seen} log lines scanned "
                                f"for {len(handler.secrets)} configured secrets, "
                                f"{len(problems)} problems")
    for problem in problems:
        terminalreporter.write_line(f"FAILED secrets in logs: {problem}", red=True)


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


@pytest.fixture(scope="session")
def base_database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.exit("DATABASE_URL is not set: run the tests with `make test`", returncode=2)
    return url


async def fresh_database(base_database_url: str, name: str) -> str:
    """An empty database of this name (dropped first if a run left it behind); its URL."""
    admin = await asyncpg.connect(base_database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return _with_path(base_database_url, f"/{name}")


@pytest.fixture(scope="session")
async def database_url(base_database_url: str) -> str:
    url = await fresh_database(base_database_url,
                               os.environ.get("WALLET_TEST_DB", "wallet_test"))
    conn = await connect(url)
    try:
        await migrate(conn, schema="wallet", folder=MIGRATIONS)
    finally:
        await conn.close()
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.exit("REDIS_URL is not set: run the tests with `make test`", returncode=2)
    return _with_path(url, "/15")


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> config.Settings:
    return config.load({
        "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "WALLET_LISTEN_ADDR": "127.0.0.1:0", "WALLET_CALLERS": CALLERS_JSON,
        "WALLET_BONUS_SWEEP_INTERVAL_MS": "200", "WALLET_DB_POOL_SIZE_MAX": "8",
    })


@pytest.fixture(scope="session")
async def server(settings: config.Settings) -> AsyncIterator[Running]:
    async with running(settings) as run:
        yield run


@pytest.fixture(scope="session")
async def client(server: Running) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield Client(channel)


@pytest.fixture(scope="session")
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.from_url(redis_url)
    yield r
    await r.aclose()


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def player() -> str:
    return f"p-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def ledger_clean(db: asyncpg.Connection) -> AsyncIterator[None]:
    """Asserts after the test that `wallet-core check` finds nothing wrong."""
    yield
    assert await check_ledger(db) == []


@pytest.fixture
def custom_settings(settings: config.Settings):  # type: ignore[no-untyped-def]
    def make(**changes: object) -> config.Settings:
        return replace(settings, **changes)
    return make
