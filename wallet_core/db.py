"""The asyncpg pool: bounded size, timeouts on connect and statements, JSON codecs."""

from __future__ import annotations

import asyncpg
import orjson

from wallet_core.config import Settings


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(type_name, schema="pg_catalog",
                                  encoder=lambda v: orjson.dumps(v).decode(),
                                  decoder=orjson.loads)


async def create_pool(settings: Settings) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=settings.db_pool_size_min,
        max_size=settings.db_pool_size_max, init=_init_connection,
        timeout=settings.db_connect_timeout_ms / 1000,
        command_timeout=settings.db_statement_timeout_ms / 1000,
        server_settings={"application_name": "wallet-core",
                         "statement_timeout": str(settings.db_statement_timeout_ms),
                         "idle_in_transaction_session_timeout":
                             str(settings.db_statement_timeout_ms * 2)})
    assert pool is not None
    return pool


async def connect(database_url: str, timeout_ms: int = 5000) -> asyncpg.Connection:
    conn = await asyncpg.connect(database_url, timeout=timeout_ms / 1000)
    await _init_connection(conn)
    return conn
