"""The asyncpg pool: bounded size, timeouts on connect and statements, JSON codecs."""

from __future__ import annotations

import asyncpg

from service_kit.pg import init_json_codecs, session_settings
from wallet_core.config import Settings
from wallet_core.domain import errors

# Errors that mean "Postgres is not there right now" (down, restarting, the connection cut).
# An operation that met one may or may not have committed; a retry with the same idempotency
# key is safe either way, so callers get UNAVAILABLE. InternalClientError is here because the
# pool raises it when it takes back a connection whose server process was terminated
# mid-query ("cannot switch to state ..."): connection loss seen from the driver's side.
DB_DOWN = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
           asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError,
           asyncpg.CrashShutdownError, asyncpg.TooManyConnectionsError,
           asyncpg.InternalClientError)


def database_unavailable() -> errors.Unavailable:
    return errors.Unavailable("the ledger database is unavailable; retry with the same "
                              "idempotency key", reason=errors.DATABASE_UNAVAILABLE)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Given back to the pool as is. asyncpg's default reset sends `SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every release: one more
    round trip per transaction, for session state the wallet never sets (no session
    settings, cursors, LISTEN, and the migration lock is released by the migration itself).
    A transaction still open is rolled back by the pool before this runs."""


async def create_pool(settings: Settings) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=settings.db_pool_size_min,
        max_size=settings.db_pool_size_max, init=init_json_codecs, reset=_keep_session,
        timeout=settings.db_connect_timeout_ms / 1000,
        command_timeout=settings.db_statement_timeout_ms / 1000,
        statement_cache_size=settings.db_statement_cache_size,
        server_settings=session_settings(
            "wallet-core", statement_timeout_ms=settings.db_statement_timeout_ms,
            idle_in_transaction_ms=settings.db_statement_timeout_ms * 2,
            startup_settings=settings.db_startup_settings))
    assert pool is not None
    return pool


async def connect(database_url: str, timeout_ms: int = 5000) -> asyncpg.Connection:
    conn = await asyncpg.connect(database_url, timeout=timeout_ms / 1000)
    await init_json_codecs(conn)
    return conn
