"""Postgres connection helpers both services use: JSON codecs, the DATABASE_URL of a CLI."""

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


def database_url_from_env() -> str:
    """DATABASE_URL for a command-line tool; exits with a clear message when it is unset."""
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        sys.exit("DATABASE_URL: required, not set")
    return url
