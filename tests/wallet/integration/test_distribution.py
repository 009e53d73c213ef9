"""Ready for Citus without Citus: every statement on the unary hot path names one player (so
it would be routed to that player's shard), the calls really issue only those statements, the
Citus variant distributes or replicates every table with keys that contain player_id, and
migration 0004 gives existing rows their player."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import grpc
import pytest
from wallet.v1 import wallet_service_pb2 as pb

from service_kit.migrations import migrate
from tests.conftest import _with_path
from tests.helpers import Client, key
from wallet_core import config
from wallet_core.db import connect
from wallet_core.server import CITUS_MIGRATIONS, MIGRATIONS, running
from wallet_core.storage import queries as q

LEDGER_TABLES = {"wallets", "journal", "postings", "bets", "rounds", "rollback_tombstones",
                 "bonuses", "withdrawals"}
REFERENCE_TABLES = {"currencies", "instance"}
# Issued on the unary path but not routed by player, each for a stated reason (queries.py):
# lookups by withdrawal id, rollbacks of bets not found, sequences, transaction control.
FANS_OUT_BY_DESIGN = {q.WITHDRAWAL_WALLET, q.BET_KEY_TAKEN, q.JOURNAL_BY_CALLER_KEY,
                      q.NEXT_BONUS_ID, q.NEXT_WITHDRAWAL_ID}
_PLAYER_FILTER = re.compile(r"\bplayer_id\s*=\s*\$\d+")


def _clauses(sql: str) -> list[tuple[str, str, str]]:
    """(kind, table, text) for each INSERT, UPDATE and FROM/JOIN on a wallet table."""
    found = []
    for m in re.finditer(r"INSERT INTO wallet\.(\w+)\s*\(([^)]*)\)", sql):
        found.append(("insert", m.group(1), m.group(2)))
    for m in re.finditer(r"UPDATE wallet\.(\w+)", sql):
        found.append(("update", m.group(1), sql[m.end():]))
    for m in re.finditer(r"(?:FROM|JOIN) wallet\.(\w+)", sql):
        found.append(("read", m.group(1), sql[m.end():]))
    return found


@pytest.mark.parametrize("name", sorted(q.HOT_PATH))
def test_every_hot_path_statement_names_one_player(name: str) -> None:
    """Inserts carry player_id; updates and reads of ledger tables filter player_id = $n."""
    sql = q.HOT_PATH[name]
    clauses = [c for c in _clauses(sql) if c[1] in LEDGER_TABLES]
    assert clauses, f"{name} touches no ledger table"
    for kind, table, text in clauses:
        if kind == "insert":
            assert "player_id" in text, f"{name}: INSERT INTO wallet.{table} without player_id"
        else:
            assert _PLAYER_FILTER.search(text), f"{name}: {kind} of wallet.{table} not by player"


def test_the_shape_check_catches_a_statement_without_its_player() -> None:
    """The check above fails on the statements it must refuse."""
    unrouted = "SELECT cash FROM wallet.wallets WHERE id = $1"
    assert not any(_PLAYER_FILTER.search(t) for _, _, t in _clauses(unrouted))
    insert = "INSERT INTO wallet.bets (journal_id, caller) VALUES ($1, $2)"
    assert all("player_id" not in t for _, _, t in _clauses(insert))


@pytest.fixture
def logged_statements(custom_settings: Callable[..., config.Settings],
                      ) -> Callable[[], AsyncIterator[tuple[Client, list[str]]]]:
    """A wallet with group commit off and a pool of one connection whose every statement is
    recorded (asyncpg's query logger)."""
    async def start() -> AsyncIterator[tuple[Client, list[str]]]:
        settings = custom_settings(listen_addr="127.0.0.1:0", group_commit=False,
                                   db_pool_size_min=1, db_pool_size_max=1,
                                   bonus_sweep_interval_ms=3_600_000)
        seen: list[str] = []
        async with running(settings) as run, \
                grpc.aio.insecure_channel(f"127.0.0.1:{run.port}") as channel:
            async with run.pool.acquire() as conn:
                conn.add_query_logger(lambda logged: seen.append(logged.query))
            yield Client(channel), seen
    return start


async def test_unary_calls_issue_only_hot_path_statements(
        logged_statements: Callable[[], AsyncIterator[tuple[Client, list[str]]]],
        player: str) -> None:
    """Every money-moving kind, one call at a time: each statement sent is on the hot path
    (routed by player) or one of the few that fan out by design."""
    async for client, seen in logged_statements():
        await client.funded(player, 50_00)
        bet_key = key("bet")
        await client.bet(player, 5_00, idem=bet_key)
        await client.bet(player, 5_00, idem=bet_key)  # replay
        await client.win(player, 7_00)
        await client.rollback(player, bet_key)
        await client.rollback(player, key("never-seen"))
        grant = await client.grant(player, 10_00, 20_00)
        await client.call("ForfeitBonus", pb.ForfeitBonusRequest(
            bonus_id=grant.bonus_id, idempotency_key=key("ff")), "bonus")
        reserved = await client.call("ReserveWithdrawal", pb.ReserveWithdrawalRequest(
            player_id=player, currency="USD", amount=1_00, psp="stripe",
            idempotency_key=key("wd")), "payments")
        await client.call("CommitWithdrawal", pb.CommitWithdrawalRequest(
            withdrawal_id=reserved.withdrawal_id, idempotency_key=key("cw")), "payments")
        await client.call("Adjust", pb.AdjustRequest(
            player_id=player, currency="USD", bucket=pb.BUCKET_CASH, amount=-1,
            reason="rounding", idempotency_key=key("adj")), "support")
        allowed = set(q.HOT_PATH.values()) | FANS_OUT_BY_DESIGN | {q.BONUS_BY_ID}
        # What the driver sends on its own (type introspection, the pool's reset, BEGIN and
        # COMMIT) names no table of ours.
        money = [s for s in seen if "wallet." in s]
        assert len(money) > 30, "the calls were recorded"
        strays = {s.strip()[:400] for s in money if s not in allowed}
        assert not strays, f"statements off the hot path: {strays}"


def _citus_sql() -> str:
    files = sorted(CITUS_MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    assert files, "the Citus variant exists"
    return "\n".join(f.read_text() for f in files)


async def test_citus_variant_places_every_table(db: asyncpg.Connection) -> None:
    """Each table of schema wallet is distributed by player_id (co-located with wallets) or
    a reference table; nothing is left where Citus would not find it."""
    sql = _citus_sql()
    tables = {r["table_name"] for r in await db.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'wallet' "
        "AND table_name <> 'schema_migrations'")}
    distributed = set(re.findall(
        r"create_distributed_table\('wallet\.(\w+)', 'player_id'", sql))
    reference = set(re.findall(r"create_reference_table\('wallet\.(\w+)'\)", sql))
    assert distributed == LEDGER_TABLES
    assert reference == REFERENCE_TABLES
    assert tables == distributed | reference
    colocated = set(re.findall(r"create_distributed_table\('wallet\.(\w+)', 'player_id',\s*"
                               r"colocate_with => 'wallet\.wallets'\)", sql))
    assert colocated == LEDGER_TABLES - {"wallets"}


def test_citus_variant_keys_contain_the_player() -> None:
    """Citus needs the distribution column in every key of a distributed table: each primary
    key, unique constraint and unique index, and each foreign key between ledger tables."""
    sql = _citus_sql()
    keys = re.findall(r"(?:PRIMARY KEY|UNIQUE)\s*\(([^)]*)\)", sql)
    keys += re.findall(r"CREATE UNIQUE INDEX \w+ ON wallet\.\w+\s*\(\s*([^,]*),", sql)
    assert len(keys) >= 10
    assert all(k.split(",")[0].strip() == "player_id" for k in keys), keys
    foreign = re.findall(r"FOREIGN KEY \(([^)]*)\) REFERENCES wallet\.(\w+)", sql)
    between_ledger = [cols for cols, target in foreign if target in LEDGER_TABLES]
    assert len(between_ledger) >= 12
    assert all(cols.startswith("player_id,") for cols in between_ledger)


@pytest.fixture
async def scratch_database(base_database_url: str) -> AsyncIterator[str]:
    name = f"wallet_dist_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base_database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _with_path(base_database_url, f"/{name}")
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_citus_migration_refuses_without_citus(scratch_database: str) -> None:
    """`wallet-core migrate --citus` on a plain Postgres: exit 1 naming the missing
    extension, and the regular schema is still in place and untouched."""
    env = {**os.environ, "DATABASE_URL": scratch_database}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "wallet_core", "migrate", "--citus"], env=env,
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "citus extension is not installed" in done.stderr
    conn = await connect(scratch_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM wallet.wallets") == 0
        assert await conn.fetchval(
            "SELECT count(*) FROM wallet_citus.schema_migrations") == 0
    finally:
        await conn.close()


async def test_migration_0004_gives_existing_rows_their_player(
        scratch_database: str, tmp_path: Path) -> None:
    """A ledger written before 0004 (one wallet with a deposit, a bet and its round, a
    rollback tombstone, a bonus and a withdrawal) has player_id on every row afterwards."""
    before = tmp_path / "before"
    before.mkdir()
    for f in sorted(MIGRATIONS.glob("000[123]_*.sql")):
        shutil.copy(f, before / f.name)
    conn = await connect(scratch_database)
    try:
        await migrate(conn, schema="wallet", folder=before)
        wallet_id = await conn.fetchval(
            "INSERT INTO wallet.wallets (player_id, currency) VALUES ('p-old', 'USD') "
            "RETURNING id")
        journal_id = await conn.fetchval(
            "INSERT INTO wallet.journal (caller, idempotency_key, request_hash, kind, status, "
            "wallet_id, currency, outcome) VALUES ('game', 'k1', '\\x00', 'bet', 'ok', $1, "
            "'USD', '{}') RETURNING id", wallet_id)
        await conn.execute(
            "INSERT INTO wallet.postings VALUES ($1, 'house:slots', 'USD', 5), "
            "($1, 'player:' || $2 || ':cash', 'USD', -5)", journal_id, str(wallet_id))
        await conn.execute(
            "INSERT INTO wallet.bets (journal_id, wallet_id, caller, idempotency_key, game_id, "
            "round_id, cash_minor, bonus_minor, bonus_debits, wagered) VALUES "
            "($1, $2, 'game', 'k1', 'slots', 'r1', 5, 0, '[]', '[]')", journal_id, wallet_id)
        await conn.execute(
            "INSERT INTO wallet.rounds VALUES ($1, 'slots', 'r1', 5, 0)", wallet_id)
        await conn.execute(
            "INSERT INTO wallet.rollback_tombstones VALUES ('game', 'k0', $1, $2)",
            wallet_id, journal_id)
        await conn.execute(
            "INSERT INTO wallet.bonuses (wallet_id, state, granted_minor, balance_minor, "
            "wagering_required_minor, wagered_minor, expires_at, grant_journal_id) VALUES "
            "($1, 'active', 5, 0, 0, 0, now(), $2)", wallet_id, journal_id)
        await conn.execute(
            "INSERT INTO wallet.withdrawals (wallet_id, amount_minor, psp, state, "
            "reserve_journal_id) VALUES ($1, 1, 'stripe', 'reserved', $2)",
            wallet_id, journal_id)
        assert (await migrate(conn, schema="wallet", folder=MIGRATIONS))[0] == 4
        for table in sorted(LEDGER_TABLES):
            players = await conn.fetch(f"SELECT DISTINCT player_id FROM wallet.{table}")
            assert [r["player_id"] for r in players] == ["p-old"], table
    finally:
        await conn.close()
