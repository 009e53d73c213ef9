"""Forward-only SQL migrations: numbered files, applied once, recorded with a checksum.

`NNNN_name.sql` files are applied in order, each in its own transaction, and recorded in
`<schema>.schema_migrations`. A session-level advisory lock serializes concurrent runners
(two processes starting at once both succeed; the second finds nothing to do). An applied
file whose checksum changed is refused: migrations are never edited after they ship.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
LOCK_TIMEOUT_S = 60.0

_CREATE_TABLE = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
_LOCK = "SELECT pg_advisory_lock($1)"
_UNLOCK = "SELECT pg_advisory_unlock($1)"
_APPLIED = "SELECT version, checksum FROM {schema}.schema_migrations"
_RECORD = "INSERT INTO {schema}.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(folder: Path) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers in {folder}")
    return found


async def migrate(conn: asyncpg.Connection, *, schema: str, folder: Path) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    if not re.fullmatch(r"[a-z_]+", schema):
        raise MigrationError(f"bad schema name {schema!r}")
    lock_id = zlib.crc32(f"migrations:{schema}".encode())
    await conn.execute(f"SET lock_timeout = '{int(LOCK_TIMEOUT_S * 1000)}ms'")
    await conn.fetchval(_LOCK, lock_id, timeout=LOCK_TIMEOUT_S)
    try:
        await conn.execute(_CREATE_TABLE.format(schema=schema))
        applied = {r["version"]: r["checksum"]
                   for r in await conn.fetch(_APPLIED.format(schema=schema))}
        done: list[int] = []
        for migration in discover(folder):
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was changed after "
                        "it was applied; add a new migration instead")
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(_RECORD.format(schema=schema), migration.version,
                                   migration.name, migration.checksum)
            done.append(migration.version)
        return done
    finally:
        await conn.fetchval(_UNLOCK, lock_id)
        await conn.execute("RESET lock_timeout")
