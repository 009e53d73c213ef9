"""PgBouncer in transaction mode in front of the wallet and the bridge (docs/SCALING.md).

PgBouncer 1.18 (Debian bookworm's) keeps no prepared statements across transactions and
refuses start-up parameters it does not know, so the services run with
WALLET_/BRIDGE_DB_STATEMENT_CACHE_SIZE=0 and _DB_STARTUP_SETTINGS=false, and the timeouts
they would have sent are set on the database instead. Through it:

1. the fault-scenario traffic, while PgBouncer is SIGKILLed and restarted and the wallet's
   server connections are terminated: nothing lost or doubled, `wallet-core check` clean;
2. the bridge's fault scenario (SIGKILLed bridges under webhook storms): every completed
   deposit credited exactly once;
3. the benchmark's Bet row on a wallet through PgBouncer next to one straight to Postgres,
   same database, alternating rounds: the overhead as a ratio of medians.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from loadtests.bench_load import Kind, LoadSpec
from loadtests.bench_procs import LoadPool
from tests.bridge.conftest import DEFAULT_KNOBS, Cashier
from tests.faults import test_bridge_faults as bridge_faults
from tests.faults.conftest import create_database, new_scenario, one_wallet, wallet_env
from tests.faults.processes import Reaper
from tests.faults.test_bridge_faults import sim_url
from tests.faults.traffic import Traffic
from tests.faults.verify import settle_and_verify
from tests.helpers import CALLERS_JSON
from tests.infra.conftest import Results
from tests.infra.engines import PrivatePgBouncer

DATABASE = "wallet_infra_pgbouncer"
LOAD_S = float(os.environ.get("INFRA_PGBOUNCER_SECONDS", "9"))
PGBOUNCER_DOWN_S = 1.0
# The Bet rows: the bench's defaults, fewer rounds.
BENCH_ROUNDS = int(os.environ.get("INFRA_BENCH_ROUNDS", "3"))
BENCH_SECONDS = 3.0
BENCH_PLAYERS = 2000
BENCH_CONCURRENCY = 64
BENCH_TOKEN = "infra-bench-token-" + secrets.token_hex(8)
# Behind PgBouncer before 1.21: unnamed statements only, no session settings at start-up.
__all__ = ["sim_url"]  # the PSP simulator fixture of the bridge fault scenario
THROUGH_PGBOUNCER = {"WALLET_DB_STATEMENT_CACHE_SIZE": "0",
                     "WALLET_DB_STARTUP_SETTINGS": "false"}


def _callers() -> str:
    """The suite's callers plus one with every scope the benchmark's set-up needs."""
    callers = orjson.loads(CALLERS_JSON)
    callers["infra-bench"] = {"token": BENCH_TOKEN,
                              "scopes": ["game", "payments", "bonus", "limits", "read"]}
    return orjson.dumps(callers).decode()


@pytest.fixture
async def bouncer(reaper: Reaper, log_dir: Path) -> AsyncIterator[tuple[str, PrivatePgBouncer]]:
    base = os.environ["DATABASE_URL"]
    direct = await create_database(base, DATABASE)
    conn = await asyncpg.connect(direct, timeout=10)
    try:
        # What the services would send at start-up, set where PgBouncer's clients get it.
        await conn.execute(f"ALTER DATABASE {DATABASE} SET statement_timeout = '5s'")
        await conn.execute(f"ALTER DATABASE {DATABASE} "
                           "SET idle_in_transaction_session_timeout = '60s'")
    finally:
        await conn.close()
    b = PrivatePgBouncer(base, DATABASE, log_dir)
    reaper.add(b.destroy)
    await b.start()
    yield direct, b


async def test_pgbouncer_in_transaction_mode(bouncer: tuple[str, PrivatePgBouncer],
                                             faults_redis_url: str, reaper: Reaper,
                                             log_dir: Path, results: Results,
                                             sim_url: tuple[str, int]) -> None:
    """PgBouncer in transaction mode: wallet and bridge fault scenarios, Bet overhead."""
    direct, b = bouncer
    conn = await asyncpg.connect(b.url(), timeout=10, statement_cache_size=0)
    try:
        timeout = await conn.fetchval("SHOW statement_timeout")
    finally:
        await conn.close()
    assert timeout == "5s", f"the database's statement_timeout through PgBouncer: {timeout}"

    # 1. The wallet's fault scenario through PgBouncer.
    sc = new_scenario("PgBouncer: wallet under faults")
    env = wallet_env(b.url(), faults_redis_url, WALLET_CALLERS=_callers(), **THROUGH_PGBOUNCER)
    _, port = await one_wallet(env, reaper, log_dir)
    target = f"127.0.0.1:{port}"
    traffic = Traffic(sc.run_id, [target], clients=16)

    async def fault() -> None:
        await asyncio.sleep(LOAD_S / 3)
        b.kill()
        await asyncio.sleep(PGBOUNCER_DOWN_S)
        await b.start()
        await asyncio.sleep(LOAD_S / 3)
        admin = await asyncpg.connect(direct, timeout=10)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND application_name = 'wallet-core'", DATABASE)
        finally:
            await admin.close()
        results.add(**{"server connections terminated": killed})

    await traffic.run_while(fault, LOAD_S)
    report = await settle_and_verify(direct, traffic, sc.report, sc.started, target)
    results.add(**{"wallet: acknowledged": report.acknowledged, "wallet: lost": report.lost,
                   "wallet: duplicated": report.duplicated, "wallet: check": report.check,
                   "wallet: caller errors": ", ".join(
                       f"{k} {v}" for k, v in sorted(report.codes.items())
                       if k not in ("OK", "FAILED_PRECONDITION")) or "none"})
    report.assert_sound()

    # 2. The bridge's fault scenario through PgBouncer.
    credited = await _bridge_scenario(b.url(), direct, port, log_dir, reaper, sim_url)
    results.add(**{"bridge: deposits credited once": credited})

    # 3. Bet through PgBouncer next to Bet straight to Postgres.
    _, direct_port = await one_wallet(
        wallet_env(direct, faults_redis_url, WALLET_CALLERS=_callers()), reaper, log_dir)
    straight, pooled = await _bet_rows(f"127.0.0.1:{direct_port}", target)
    ratio = statistics.median(p / s for p, s in zip(pooled, straight, strict=True))
    results.add(**{"Bet ops/s direct (median)": round(statistics.median(straight)),
                   "Bet ops/s via PgBouncer (median)": round(statistics.median(pooled)),
                   "via/direct (median of rounds)": round(ratio, 3)})
    results.passed = True


async def _bridge_scenario(via: str, direct: str, wallet_port: int, log_dir: Path,
                           reaper: Reaper, sim_url: tuple[str, int]) -> str:
    """The bridge fault scenario's phases with the bridge on PgBouncer; returns "n of n"."""
    sc = new_scenario("PgBouncer: bridge under webhook storms")
    sim, bridge_port = sim_url
    through = {"BRIDGE_DB_STATEMENT_CACHE_SIZE": "0", "BRIDGE_DB_STARTUP_SETTINGS": "false",
               # Migrated straight against Postgres (create_database) beforehand.
               "BRIDGE_MIGRATE_ON_START": "false"}
    saved = {k: os.environ.get(k) for k in through}
    os.environ.update(through)
    try:
        started: list[object] = []

        def bridge(wallet_at: int) -> object:
            proc = bridge_faults._bridge(len(started) + 1, database_url=via,
                                         wallet_port=wallet_at, sim=sim,
                                         bridge_port=bridge_port, log_dir=log_dir)
            started.append(proc)
            reaper.add(proc.kill)
            return proc

        conn = await asyncpg.connect(direct, timeout=10)
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=15)) as http:
            cashier = Cashier(http, f"http://127.0.0.1:{bridge_port}", sim)
            try:
                payments = await bridge_faults._run_phases(sc.run_id, cashier, bridge,
                                                           wallet_port, conn)
                report = await bridge_faults._verify(sc.report, conn, payments, cashier,
                                                     direct)
            finally:
                await cashier.knobs(**DEFAULT_KNOBS)
                await conn.close()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    report.assert_sound()
    return f"{report.found_in_ledger - report.duplicated} of {report.attempted}"


async def _bet_rows(direct: str, pooled: str) -> tuple[list[float], list[float]]:
    """Bet ops/s per round straight to Postgres and through PgBouncer, the order alternating
    each round so neither always runs on a warmer machine."""
    pool = LoadPool(2)
    pool.start()
    tag = f"pgb{secrets.token_hex(4)}"
    straight: list[float] = []
    through: list[float] = []
    try:
        setup = LoadSpec(kind=Kind.SETUP, tag=f"{tag}-setup", targets=(direct,),
                         token=BENCH_TOKEN, concurrency=32, warmup_s=0.0,
                         players=BENCH_PLAYERS, count=BENCH_PLAYERS)
        done, _ = await pool.run(setup)
        assert not done.errors and done.ops == BENCH_PLAYERS, done.errors
        for r in range(BENCH_ROUNDS):
            order = [(direct, straight), (pooled, through)]
            for target, out in order if r % 2 == 0 else reversed(order):
                spec = LoadSpec(kind=Kind.BET_RANDOM, tag=f"{tag}-{r}-{len(out)}",
                                targets=(target,), token=BENCH_TOKEN,
                                concurrency=BENCH_CONCURRENCY, warmup_s=0.5,
                                duration_s=BENCH_SECONDS, players=BENCH_PLAYERS)
                began = time.monotonic()
                result, _ = await pool.run(spec)
                assert not result.errors, (target, dict(result.errors), time.monotonic()
                                           - began)
                out.append(result.ops / result.window_s)
    finally:
        await asyncio.to_thread(pool.close)
    return straight, through
