"""Postgres connection helpers both services use: JSON codecs, the session settings a pool
sends, the DATABASE_URL of a CLI."""

from __future__ import annotations

import os
import sys

import asyncpg
import orjson

# What "the database is unreachable or failed" looks like to a use case or an edge: the
# caller answers "unavailable, retry" rather than treating it as a bug.
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


async def init_json_codecs(conn: asyncpg.Connection) -> None:
    """json/jsonb columns as Python values, through orjson (pool `init=` and single
    connections alike)."""
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(type_name, schema="pg_catalog",
                                  encoder=lambda v: orjson.dumps(v).decode(),
                                  decoder=orjson.loads)


def session_settings(application_name: str, *, statement_timeout_ms: int,
                     idle_in_transaction_ms: int, startup_settings: bool) -> dict[str, str]:
    """The start-up parameters of a pool's connections. Behind PgBouncer in transaction mode
    only the application name may travel this way: PgBouncer refuses start-up parameters it
    does not know, and one server connection serves many clients. The timeouts are then set
    on the role or database (`ALTER ROLE ... SET statement_timeout`, docs/SCALING.md)."""
    settings = {"application_name": application_name}
    if startup_settings:
        settings.update({"statement_timeout": str(statement_timeout_ms),
                         "idle_in_transaction_session_timeout": str(idle_in_transaction_ms)})
    return settings


def database_url_from_env() -> str:
    """DATABASE_URL for a command-line tool; exits with a clear message when it is unset."""
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        sys.exit("DATABASE_URL: required, not set")
    return url
