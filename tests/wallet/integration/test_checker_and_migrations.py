"""`wallet-core check` finds tampering; migrations are safe twice and from two processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from service_kit.migrations import MigrationError, migrate
from tests.conftest import _with_path
from tests.helpers import Client
from wallet_core.db import connect
from wallet_core.server import MIGRATIONS
from wallet_core.storage.checker import check_ledger

WALLET_CORE = [sys.executable, "-m", "wallet_core"]


async def _wallet_id(db: asyncpg.Connection, player: str) -> int:
    return int(await db.fetchval("SELECT id FROM wallet.wallets WHERE player_id = $1", player))


async def test_check_reports_a_tampered_balance(client: Client, player: str,
                                                db: asyncpg.Connection) -> None:
    """A bucket changed behind the journal's back is reported, then clean once restored."""
    await client.funded(player, 10_00)
    wallet_id = await _wallet_id(db, player)
    assert await check_ledger(db) == []
    await db.execute("UPDATE wallet.wallets SET cash = cash + 1 WHERE id = $1", wallet_id)
    try:
        problems = await check_ledger(db)
        assert any("bucket differs from the sum of its postings" in p and f"id={wallet_id}" in p
                   for p in problems), problems
    finally:
        await db.execute("UPDATE wallet.wallets SET cash = cash - 1 WHERE id = $1", wallet_id)
    assert await check_ledger(db) == []


async def test_check_reports_an_unbalanced_journal_entry(client: Client, player: str,
                                                         db: asyncpg.Connection) -> None:
    """A posting added to one side only is reported as unbalanced, per entry and currency."""
    await client.funded(player, 5_00)
    journal_id = await db.fetchval(
        "SELECT max(j.id) FROM wallet.journal j JOIN wallet.wallets w ON w.id = j.wallet_id "
        "WHERE w.player_id = $1", player)
    await db.execute("INSERT INTO wallet.postings (journal_id, account, currency, amount_minor, "
                     "player_id) VALUES ($1, 'house:tamper', 'USD', 7, $2)", journal_id, player)
    try:
        problems = await check_ledger(db)
        assert any(p.startswith("journal entry with unbalanced postings") and
                   f"journal_id={journal_id}" in p for p in problems), problems
        assert any(p.startswith("currency does not sum to zero") for p in problems)
    finally:
        await db.execute("DELETE FROM wallet.postings WHERE journal_id = $1 AND "
                         "account = 'house:tamper'", journal_id)
    assert await check_ledger(db) == []


async def test_check_command_exits_non_zero_with_a_readable_list(
        client: Client, player: str, db: asyncpg.Connection, database_url: str) -> None:
    """The CLI prints each problem and exits 1; clean ledger exits 0."""
    await client.funded(player, 1_00)
    wallet_id = await _wallet_id(db, player)
    env = {**os.environ, "DATABASE_URL": database_url}
    await db.execute("UPDATE wallet.wallets SET reserved = reserved + 3 WHERE id = $1", wallet_id)
    try:
        bad = await asyncio.to_thread(subprocess.run, [*WALLET_CORE, "check"], env=env,
                                      capture_output=True, text=True, timeout=60)
    finally:
        await db.execute("UPDATE wallet.wallets SET reserved = reserved - 3 WHERE id = $1",
                         wallet_id)
    assert bad.returncode == 1
    assert "ledger check FAILED" in bad.stdout and "reserved" in bad.stdout
    good = await asyncio.to_thread(subprocess.run, [*WALLET_CORE, "check"], env=env,
                                   capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stdout + good.stderr


async def test_reversed_withdrawal_needs_its_reversal_entry(client: Client, player: str,
                                                          db: asyncpg.Connection) -> None:
    """Migration 0003: state 'reversed' and reversal_journal_id come together or not at all."""
    await client.funded(player, 1_00)
    journal_id = await db.fetchval(
        "SELECT max(j.id) FROM wallet.journal j JOIN wallet.wallets w ON w.id = j.wallet_id "
        "WHERE w.player_id = $1", player)
    wallet_id = await _wallet_id(db, player)
    for state, reversal in (("reversed", None), ("committed", journal_id)):
        with pytest.raises(asyncpg.CheckViolationError) as caught:
            await db.execute(
                "INSERT INTO wallet.withdrawals (wallet_id, amount_minor, psp, state, "
                "reserve_journal_id, final_journal_id, reversal_journal_id, player_id) "
                "VALUES ($1, 1, 'stripe', $2, $3, $3, $4, $5)",
                wallet_id, state, journal_id, reversal, player)
        assert caught.value.constraint_name == "withdrawals_reversal_check"
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await db.execute(
            "INSERT INTO wallet.withdrawals (wallet_id, amount_minor, psp, state, "
            "reserve_journal_id, final_journal_id, player_id) "
            "VALUES ($1, 1, 'stripe', 'returned', $2, $2, $3)", wallet_id, journal_id, player)
    assert caught.value.constraint_name == "withdrawals_state_check"


@pytest.fixture
async def scratch_database(base_database_url: str):  # type: ignore[no-untyped-def]
    name = f"wallet_scratch_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base_database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield _with_path(base_database_url, f"/{name}")
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def test_migrations_run_twice_and_from_two_processes(scratch_database: str) -> None:
    """Two `wallet-core migrate` at once both succeed; each migration is recorded once."""
    env = {**os.environ, "DATABASE_URL": scratch_database}
    procs = [subprocess.Popen([*WALLET_CORE, "migrate"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [await asyncio.to_thread(p.communicate, timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    conn = await connect(scratch_database)
    try:
        assert await migrate(conn, schema="wallet", folder=MIGRATIONS) == []
        versions = await conn.fetch("SELECT version FROM wallet.schema_migrations")
        on_disk = sorted(int(f.name[:4]) for f in MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"))
        assert len(on_disk) >= 4
        assert sorted(r["version"] for r in versions) == on_disk
    finally:
        await conn.close()


async def test_an_edited_migration_is_refused(scratch_database: str, tmp_path: Path) -> None:
    """Forward-only: changing an applied migration's text stops the runner."""
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE scratch.t (id int);")
    conn = await connect(scratch_database)
    try:
        await conn.execute("CREATE SCHEMA scratch")
        assert await migrate(conn, schema="scratch", folder=tmp_path) == [1]
        (tmp_path / "0001_first.sql").write_text("CREATE TABLE scratch.t (id bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, schema="scratch", folder=tmp_path)
    finally:
        await conn.close()
