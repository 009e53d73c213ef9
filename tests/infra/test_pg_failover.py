"""Postgres failover under the fault-scenario load (docs/SCALING.md, docs/RELIABILITY.md).

A private primary and a streaming standby made with `pg_basebackup -R`, on leased loopback
ports. The wallet connects with a multi-host DATABASE_URL and `target_session_attrs=
read-write`, so it follows whichever host takes writes. Under the fault scenarios' traffic
(every money-moving RPC, 16 clients, retries with the same keys):

1. the standby stops taking WAL for a moment (its WAL receiver paused, as a congested link
   would), so the primary has commits the standby lacks;
2. the primary is SIGKILLed, every process at once, and the unread WAL is dropped with the
   receiver (SIGKILL), as a partition would drop it;
3. after a detection delay the standby is promoted.

With a synchronous standby no commit was acknowledged before the standby had it, so every
acknowledged operation must be on the new primary exactly once (`assert_sound`). With an
asynchronous one the check measures what was acknowledged and lost, and how many of those
the wallet's idempotency cache still answers as done.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import redis.asyncio as redis
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

from tests.faults.conftest import create_database, new_scenario, one_wallet, wallet_env
from tests.faults.processes import PrivatePostgres, Reaper
from tests.faults.traffic import Traffic
from tests.faults.verify import Report, journal_rows, settle_and_verify
from tests.helpers import TOKENS
from tests.infra.conftest import Results

STANDBY_NAME = "standby1"
# Traffic seconds per run, and when in it the primary dies.
LOAD_S = float(os.environ.get("INFRA_FAILOVER_SECONDS", "12"))
# How long the standby takes no WAL before the crash: commits acknowledged meanwhile exist
# only on the primary (asynchronous), or wait for the standby (synchronous).
WAL_PAUSE_S = 1.0
# What a failover manager (Patroni, pg_auto_failover, a cloud's) takes to notice the dead
# primary and promote; the wallet's share of the outage is measured apart from it.
DETECTION_S = 1.0
PROBE_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 1.0
REPLICATION_WAIT_S = 30.0


@dataclass
class Timeline:
    killed_at: float = 0.0
    promoted_at: float = 0.0
    first_ok_after_kill: float = 0.0
    probe_failures: dict[str, int] = field(default_factory=dict)


async def _replicating(primary: PrivatePostgres, *, sync: bool) -> None:
    """Until the primary streams to the standby in the wanted mode (bounded)."""
    want = "sync" if sync else "async"
    conn = await asyncpg.connect(primary.admin_url, timeout=10)
    try:
        if sync:
            await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
        else:
            await conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
        await conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + REPLICATION_WAIT_S
        while True:
            state = await conn.fetchrow(
                "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1",
                STANDBY_NAME)
            if state is not None and (state["state"], state["sync_state"]) == ("streaming",
                                                                                want):
                return
            assert time.monotonic() < deadline, f"standby not streaming ({want}): {state}"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def _probe(target: str, run_id: str, timeline: Timeline, stop: asyncio.Event) -> None:
    """One OpenWallet (a write) every PROBE_INTERVAL_S: when writes came back after the
    kill is when callers stopped seeing UNAVAILABLE."""
    auth = [("authorization", f"Bearer {TOKENS['game']}")]
    n = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.WalletServiceStub(channel)
        while not stop.is_set():
            n += 1
            sent_at = time.monotonic()
            try:
                # Not under the run's prefix: the traffic's verification counts those rows.
                await stub.OpenWallet(pb.OpenWalletRequest(
                    player_id=f"probe-{run_id}", currency="USD",
                    idempotency_key=f"probe-{run_id}-{n}"), metadata=auth,
                    timeout=PROBE_TIMEOUT_S)
                # Only a call sent after the kill shows writes are back (one in flight then
                # may have committed before it).
                if timeline.killed_at and not timeline.first_ok_after_kill \
                        and sent_at > timeline.killed_at:
                    timeline.first_ok_after_kill = time.monotonic()
            except grpc.aio.AioRpcError as err:
                if timeline.killed_at:
                    code = err.code().name
                    timeline.probe_failures[code] = timeline.probe_failures.get(code, 0) + 1
            await asyncio.sleep(PROBE_INTERVAL_S)


async def _wal_receiver_pid(standby: PrivatePostgres) -> int:
    conn = await asyncpg.connect(standby.admin_url, timeout=10)
    try:
        pid = await conn.fetchval("SELECT pid FROM pg_stat_wal_receiver")
    finally:
        await conn.close()
    assert pid, "the standby has no WAL receiver"
    return int(pid)


async def _cached_replies(redis_url: str, lost: list[tuple[str, str]]) -> int:
    """How many lost operations the wallet's Redis tier still answers as done."""
    client = redis.from_url(redis_url)
    found = 0
    try:
        for caller, key in lost[:200]:
            async for _ in client.scan_iter(match=f"wallet:idem:*:{caller}:{key}", count=1000):
                found += 1
                break
    finally:
        await client.aclose()
    return found


async def _failover(*, sync: bool, redis_url: str, reaper: Reaper, log_dir: Path,
                    results: Results) -> Report:
    mode = "synchronous" if sync else "asynchronous"
    sc = new_scenario(f"Postgres failover, {mode} standby")
    primary = PrivatePostgres(["wal_level=replica", "max_wal_senders=4",
                               "wal_sender_timeout=5s"])
    reaper.add(primary.destroy)
    await asyncio.to_thread(primary.init)
    await asyncio.to_thread(primary.start)
    await create_database(primary.admin_url, "wallet_failover")
    standby = PrivatePostgres(["hot_standby=on", "wal_receiver_timeout=5s"])
    reaper.add(standby.destroy)
    await asyncio.to_thread(standby.basebackup_from, primary, application_name=STANDBY_NAME)
    await asyncio.to_thread(standby.start)
    await _replicating(primary, sync=sync)

    both = (f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
            f"/wallet_failover?target_session_attrs=read-write")
    _, port = await one_wallet(wallet_env(both, redis_url), reaper, log_dir)
    target = f"127.0.0.1:{port}"
    traffic = Traffic(sc.run_id, [target], clients=16)
    timeline = Timeline()
    stop_probe = asyncio.Event()
    probe = asyncio.create_task(_probe(target, sc.run_id, timeline, stop_probe))

    async def fault() -> None:
        await asyncio.sleep(LOAD_S / 3)
        receiver = await _wal_receiver_pid(standby)
        os.kill(receiver, signal.SIGSTOP)
        await asyncio.sleep(WAL_PAUSE_S)
        await asyncio.to_thread(primary.crash)
        # From when every process of the primary is gone (calls sent while it was being
        # killed may still have been answered).
        timeline.killed_at = time.monotonic()
        # What the receiver had not read never reached the standby.
        os.kill(receiver, signal.SIGKILL)
        await asyncio.sleep(DETECTION_S)
        # From the promote request: `pg_ctl promote -w` may return after the wallet has
        # already written to the promoted standby.
        timeline.promoted_at = time.monotonic()
        await asyncio.to_thread(standby.promote)

    try:
        await traffic.run_while(fault, LOAD_S)
        deadline = time.monotonic() + 30
        while not timeline.first_ok_after_kill and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        stop_probe.set()
        await probe
    assert timeline.first_ok_after_kill, "writes never came back after the failover"
    report = await settle_and_verify(standby.url("wallet_failover"), traffic, sc.report,
                                     sc.started, target)

    conn = await asyncpg.connect(standby.url("wallet_failover"), timeout=10)
    try:
        found = await journal_rows(conn, traffic.run_id)
    finally:
        await conn.close()
    lost = [(op.caller, op.key) for call in traffic.calls for op in call.ops
            if op.acked_tx is not None and not op.acked_in_converge
            and (op.caller, op.key) not in found]
    prefix = "sync" if sync else "async"
    results.add(**{
        f"{prefix}: acknowledged": report.acknowledged,
        f"{prefix}: lost": report.lost,
        f"{prefix}: lost yet cached as done": await _cached_replies(redis_url, lost),
        f"{prefix}: duplicated": report.duplicated,
        f"{prefix}: check": report.check if report.check == "clean" else "FAILED",
        f"{prefix}: writes unavailable s": round(timeline.first_ok_after_kill
                                                 - timeline.killed_at, 2),
        f"{prefix}: after the promote request s": round(timeline.first_ok_after_kill
                                              - timeline.promoted_at, 2),
        f"{prefix}: caller errors": ", ".join(
            f"{k} {v}" for k, v in sorted(report.codes.items())
            if k not in ("OK", "FAILED_PRECONDITION")) or "none"})
    return report


async def test_failover_to_a_synchronous_standby_loses_nothing(
        faults_redis_url: str, reaper: Reaper, log_dir: Path, results: Results) -> None:
    """Postgres failover: synchronous standby (nothing lost) vs asynchronous (what is lost)."""
    report = await _failover(sync=True, redis_url=faults_redis_url, reaper=reaper,
                             log_dir=log_dir, results=results)
    report.assert_sound()
    reaper.close()
    asynchronous = await _failover(sync=False, redis_url=faults_redis_url, reaper=reaper,
                                   log_dir=log_dir, results=results)
    # The asynchronous run passes when it ran and could measure: its loss is the finding.
    assert asynchronous.attempted > 0 and asynchronous.check == "clean", asynchronous.check
    results.passed = True
