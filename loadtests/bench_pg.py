"""All SQL of the benchmark: the bench database's life, the raw-Postgres scratch tables, the
one-statement bet that measures Postgres's own ceiling for one operation per call, the
baseline wallet's funded players, and the live view of which backends serve whom.

The raw ceiling (row 7) is what Postgres does when each call carries one money movement in
its cheapest form: a guarded balance UPDATE and a journal INSERT in one statement (a CTE),
committed on its own. The wallet's Bet writes more (journal, postings, bet, round), so this
is an upper bound on any one-operation-per-call design, which is why ExecuteBatch is stated
as a multiple of it.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

# Rows of the scratch balance table (the issue: random rows of 10,000).
ACCOUNTS = 10_000
# Every scratch balance can take this many 1-cent debits before its CHECK refuses one.
ACCOUNT_BALANCE_MINOR = 10**12
# The bench database is dropped at every run: only names of this shape are accepted, so a
# typo can never drop `wallet`, `wallet_test`, `postgres` or anything else.
BENCH_DB_NAME_RE = re.compile(r"wallet_bench[a-z0-9_]{0,20}")
ADMIN_TIMEOUT_S = 30.0

_SCRATCH_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS bench;
DROP TABLE IF EXISTS bench.journal, bench.accounts;
CREATE TABLE bench.accounts (
    id      integer PRIMARY KEY,
    balance bigint NOT NULL CONSTRAINT balance_not_negative CHECK (balance >= 0)
);
CREATE TABLE bench.journal (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id    integer NOT NULL,
    amount        bigint NOT NULL,
    balance_after bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
"""
_FILL_ACCOUNTS = """
INSERT INTO bench.accounts (id, balance) SELECT g, $2 FROM generate_series(1, $1) AS g
"""
# The one-statement bet: $1 account id, $2 amount. The CHECK guards the balance; the
# journal row is only written when the debit happened.
DEBIT_AND_JOURNAL = """
WITH debited AS (
    UPDATE bench.accounts SET balance = balance - $2 WHERE id = $1 RETURNING id, balance
)
INSERT INTO bench.journal (account_id, amount, balance_after)
SELECT id, $2, balance FROM debited
"""
# Postgres backends of the servers the bench measures, told apart by application_name: the
# wallet's pool sets 'wallet-core', the baseline's 'wallet-baseline', row 7's load its own.
WALLET_APP = "wallet-core"
RAW_APP = "wallet-bench-raw"  # row 7's own connections (loadtests/bench_load.py)
# Server connections of one application on the bench database that did anything since
# $2 (a timestamptz): pg_stat_activity is live, unlike the cumulative statistics views.
_ACTIVITY_SINCE = """
SELECT count(*) FILTER (WHERE state_change >= $2) AS touched, count(*) AS connections
FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1
"""
_BACKEND_PIDS = """
SELECT pid, application_name FROM pg_stat_activity
WHERE datname = current_database() AND application_name = ANY($1::text[])
"""
# The baseline wallet's players, funded in one statement: $1 player ids, $2 currencies,
# $3 cash in minor units (parallel arrays). The baseline server creates the schema.
_FUND_BASELINE = """
INSERT INTO baseline.wallets (player_id, currency, cash)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
"""


async def backend_pids(conn: asyncpg.Connection, apps: Sequence[str]) -> dict[int, str]:
    """Postgres backends on the bench database of these applications: pid → application."""
    rows = await conn.fetch(_BACKEND_PIDS, list(apps), timeout=ADMIN_TIMEOUT_S)
    return {int(r["pid"]): str(r["application_name"]) for r in rows}


async def fund_baseline(db_url: str, wallets: Sequence[tuple[str, str, int]]) -> None:
    """Insert the baseline's funded wallets (player, currency, cash minor) in bulk."""
    conn = await asyncpg.connect(db_url, timeout=ADMIN_TIMEOUT_S)
    try:
        players, currencies, cash = zip(*wallets, strict=True)
        await conn.execute(_FUND_BASELINE, list(players), list(currencies), list(cash),
                           timeout=ADMIN_TIMEOUT_S)
        await conn.execute("ANALYZE baseline.wallets", timeout=ADMIN_TIMEOUT_S)
    finally:
        await conn.close()


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def check_bench_db_name(name: str) -> str:
    if not BENCH_DB_NAME_RE.fullmatch(name):
        raise ValueError(f"--bench-db {name!r}: must match {BENCH_DB_NAME_RE.pattern} (the "
                         "benchmark drops it at every run)")
    return name


async def recreate_database(server_url: str, name: str) -> None:
    """Drop and create the bench database (never any other: the name is checked)."""
    check_bench_db_name(name)
    conn = await asyncpg.connect(with_database(server_url, "postgres"), timeout=ADMIN_TIMEOUT_S)
    try:
        # Identifiers cannot be parameters; the name is checked against BENCH_DB_NAME_RE.
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                           timeout=ADMIN_TIMEOUT_S)
        await conn.execute(f'CREATE DATABASE "{name}"', timeout=ADMIN_TIMEOUT_S)
    finally:
        await conn.close()


async def create_scratch_tables(db_url: str) -> None:
    conn = await asyncpg.connect(db_url, timeout=ADMIN_TIMEOUT_S)
    try:
        await conn.execute(_SCRATCH_SCHEMA, timeout=ADMIN_TIMEOUT_S)
        await conn.execute(_FILL_ACCOUNTS, ACCOUNTS, ACCOUNT_BALANCE_MINOR,
                           timeout=ADMIN_TIMEOUT_S)
        await conn.execute("ANALYZE bench.accounts", timeout=ADMIN_TIMEOUT_S)
    finally:
        await conn.close()


async def server_version(db_url: str) -> str:
    conn = await asyncpg.connect(db_url, timeout=ADMIN_TIMEOUT_S)
    try:
        return str(await conn.fetchval("SHOW server_version", timeout=ADMIN_TIMEOUT_S))
    finally:
        await conn.close()


async def connections_touched_since(db_url: str, app: str,
                                    since_epoch_s: float) -> tuple[int, int]:
    """(connections of `app` active since that instant, connections of `app` in all)."""
    conn = await asyncpg.connect(db_url, timeout=ADMIN_TIMEOUT_S)
    try:
        row = await conn.fetchrow(_ACTIVITY_SINCE, app,
                                  datetime.fromtimestamp(since_epoch_s, UTC),
                                  timeout=ADMIN_TIMEOUT_S)
    finally:
        await conn.close()
    assert row is not None
    return int(row["touched"]), int(row["connections"])
