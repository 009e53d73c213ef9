"""Fault scenarios against wallet subprocesses on the shared Postgres (in their own
database): SIGKILL, two processes with one killed, Redis flushed/stopped/restarted, backends
terminated mid-transaction, a slow and lossy network to Postgres, tiny client deadlines.

Each drives concurrent clients through every money-moving operation while the fault
happens, then proves zero lost, zero duplicated and `wallet-core check` clean (verify.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis

from loadtests.ports import lease_port
from tests.faults.conftest import (
    new_scenario,
    one_wallet,
    traffic_clients,
    traffic_seconds,
    wallet_env,
)
from tests.faults.processes import PrivateRedis, Reaper, start_wallet, wallet_proc
from tests.faults.proxy import SlowProxy
from tests.faults.traffic import RetryPolicy, Traffic
from tests.faults.verify import settle_and_verify


async def test_wallet_sigkilled_mid_load_and_restarted(
        faults_database_url: str, faults_redis_url: str, reaper: Reaper,
        log_dir: Path) -> None:
    """SIGKILL of the only wallet process mid-load, twice, then restarts: nothing lost or doubled."""
    sc = new_scenario("1. wallet SIGKILLed mid-load, restarted")
    wallet, port = await one_wallet(wallet_env(faults_database_url, faults_redis_url), reaper, log_dir)
    target = f"127.0.0.1:{port}"
    traffic = Traffic(sc.run_id, [target], clients=traffic_clients())
    duration_s = traffic_seconds()

    async def fault() -> None:
        for _ in range(2):
            await asyncio.sleep(duration_s / 3)
            wallet.kill()
            await asyncio.sleep(0.5)
            await start_wallet(wallet, port)

    await traffic.run_while(fault, duration_s)
    report = await settle_and_verify(faults_database_url, traffic, sc.report, sc.started, target)
    report.notes["wallet_starts"] = wallet.starts
    report.assert_sound()


async def test_two_wallets_on_one_database_one_sigkilled(
        faults_database_url: str, faults_redis_url: str, reaper: Reaper,
        log_dir: Path) -> None:
    """Two wallet processes share a port (SO_REUSEPORT) and a database; one is SIGKILLed mid-load."""
    sc = new_scenario("2. two wallets on one database, one SIGKILLed")
    port = lease_port()
    env = wallet_env(faults_database_url, faults_redis_url, WALLET_SO_REUSEPORT="true")
    wallets = [wallet_proc(f"wallet-{n}", env=env, port=port, log_dir=log_dir) for n in (1, 2)]
    for wallet in wallets:
        reaper.add(wallet.kill)
        await start_wallet(wallet, port)
    target = f"127.0.0.1:{port}"
    traffic = Traffic(sc.run_id, [target], clients=traffic_clients())
    duration_s = traffic_seconds()

    async def fault() -> None:
        await asyncio.sleep(duration_s / 3)
        wallets[0].kill()  # its clients reconnect to the survivor on the same port
        await asyncio.sleep(duration_s / 3)
        await start_wallet(wallets[0], port)

    await traffic.run_while(fault, duration_s)
    report = await settle_and_verify(faults_database_url, traffic, sc.report, sc.started, target)
    report.assert_sound()


async def test_redis_flushed_then_stopped_then_restarted(
        faults_database_url: str, reaper: Reaper, log_dir: Path) -> None:
    """A private Redis is flushed, stopped and restarted mid-load; Postgres keeps exactly-once."""
    sc = new_scenario("3. Redis flushed, stopped, restarted")
    redis_server = PrivateRedis(log_dir)
    reaper.add(redis_server.kill)
    await redis_server.start()
    port = lease_port()
    # No in-process replay cache: every replay that skips Postgres comes from Redis.
    wallet = wallet_proc("wallet", env=wallet_env(faults_database_url, redis_server.url,
                                                  WALLET_REPLAY_CACHE_ENTRIES_MAX="0"),
                         port=port, log_dir=log_dir)
    reaper.add(wallet.kill)
    await start_wallet(wallet, port)
    target = f"127.0.0.1:{port}"
    traffic = Traffic(sc.run_id, [target], clients=traffic_clients())
    duration_s = traffic_seconds()

    async def fault() -> None:
        await asyncio.sleep(duration_s / 4)
        r = aioredis.from_url(redis_server.url, socket_timeout=5)
        try:
            sc.report.notes["redis_keys_flushed"] = await r.dbsize()
            await r.flushdb()
        finally:
            await r.aclose()
        await asyncio.sleep(duration_s / 4)
        redis_server.kill()
        await asyncio.sleep(duration_s / 4)
        await redis_server.start()

    await traffic.run_while(fault, duration_s)
    report = await settle_and_verify(faults_database_url, traffic, sc.report, sc.started, target)
    report.assert_sound()


TERMINATE_WALLET_BACKENDS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name = 'wallet-core' AND datname = current_database()
  AND pid <> pg_backend_pid() AND (xact_start IS NOT NULL OR $1)
"""


async def test_postgres_backends_terminated_mid_transaction(
        faults_database_url: str, faults_redis_url: str, reaper: Reaper,
        log_dir: Path) -> None:
    """pg_terminate_backend on the wallet's connections in a transaction, every ~0.3 s, mid-load."""
    sc = new_scenario("5. Postgres backends terminated mid-transaction")
    wallet, port = await one_wallet(wallet_env(faults_database_url, faults_redis_url), reaper, log_dir)
    target = f"127.0.0.1:{port}"
    traffic = Traffic(sc.run_id, [target], clients=traffic_clients())
    duration_s = traffic_seconds()
    admin = await asyncpg.connect(faults_database_url, timeout=10)

    async def fault() -> None:
        terminated, rounds = 0, 0
        loop = asyncio.get_running_loop()
        end = loop.time() + duration_s * 0.8
        while loop.time() < end:
            await asyncio.sleep(0.3)
            rounds += 1
            # Mostly the connections inside a transaction; every 4th round, all of them.
            terminated += await admin.fetchval(TERMINATE_WALLET_BACKENDS, rounds % 4 == 0)
        sc.report.notes["backends_terminated"] = terminated

    try:
        await traffic.run_while(fault, duration_s)
    finally:
        await admin.close()
    report = await settle_and_verify(faults_database_url, traffic, sc.report, sc.started, target)
    report.assert_sound()


# The wallet's own cap on a call (WALLET_REQUEST_TIMEOUT_MS) in the slow-network scenario,
# and the client's far longer deadline: an attempt reaching the client's deadline would mean
# the wallet failed to answer within its own.
SLOW_REQUEST_TIMEOUT_MS = 1500
SLOW_CLIENT_DEADLINE_S = 20.0


async def test_slow_lossy_network_to_postgres(
        faults_database_url: str, faults_redis_url: str, reaper: Reaper,
        log_dir: Path) -> None:
    """Latency and dropped connections between wallet and Postgres: every call answers within the
    wallet's deadline (OK, UNAVAILABLE or DEADLINE_EXCEEDED), and nothing is lost or doubled."""
    sc = new_scenario("7. slow, lossy network to Postgres")
    db = urlsplit(faults_database_url)
    proxy = SlowProxy(db.hostname or "127.0.0.1", db.port or 5432, latency_ms=(1, 10))
    await proxy.start()
    proxied = proxy.url(faults_database_url)
    port = lease_port()
    wallet = wallet_proc("wallet", env=wallet_env(
        proxied, faults_redis_url, WALLET_REQUEST_TIMEOUT_MS=str(SLOW_REQUEST_TIMEOUT_MS),
        WALLET_DB_CONNECT_TIMEOUT_MS="1000"), port=port, log_dir=log_dir)
    reaper.add(wallet.kill)
    try:
        await start_wallet(wallet, port)
        target = f"127.0.0.1:{port}"
        traffic = Traffic(sc.run_id, [target], clients=traffic_clients(),
                          policy=RetryPolicy(attempt_deadline_s=SLOW_CLIENT_DEADLINE_S))
        duration_s = traffic_seconds()

        async def fault() -> None:
            proxy.start_drops(every_s=0.5)
            await asyncio.sleep(duration_s)
            proxy.stop_drops()

        await traffic.run_while(fault, duration_s)
        sc.report.notes.update({"proxy_drops": proxy.stats.drops,
                                "proxy_connections": proxy.stats.connections})
        report = await settle_and_verify(faults_database_url, traffic, sc.report, sc.started,
                                         target)
    finally:
        wallet.kill()
        await proxy.close()
    report.assert_sound()
    # Deadlines hold: the wallet answered every attempt itself, long before the client's
    # deadline (a generous bound, not a latency figure).
    assert traffic.stats.attempt_s_max < SLOW_CLIENT_DEADLINE_S / 2, traffic.stats.attempt_s_max


async def test_tiny_client_deadlines_retry_gets_the_committed_outcome(
        faults_database_url: str, faults_redis_url: str, reaper: Reaper,
        log_dir: Path) -> None:
    """Clients give up after 1-30 ms; their retries with the same key get the committed outcome
    (same transaction id), never a second effect."""
    sc = new_scenario("8. tiny client deadlines, then retries")
    wallet, port = await one_wallet(wallet_env(faults_database_url, faults_redis_url), reaper, log_dir)
    target = f"127.0.0.1:{port}"
    traffic = Traffic(sc.run_id, [target], clients=traffic_clients(),
                      policy=RetryPolicy(first_deadline_s=(0.001, 0.03)))

    async def no_fault() -> None:  # the fault is the clients' own impatience
        return None

    await traffic.run_while(no_fault, traffic_seconds())
    report = await settle_and_verify(faults_database_url, traffic, sc.report, sc.started, target)
    report.assert_sound()
