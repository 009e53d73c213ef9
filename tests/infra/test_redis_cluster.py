"""The wallet on a Redis Cluster (docs/SCALING.md): six redis-server nodes in cluster mode,
three primaries with a replica each, on leased loopback ports. The wallet takes
`REDIS_URL=redis+cluster://host:port,...` and uses redis-py's cluster client; under the
fault-scenario traffic a primary is SIGKILLed, its replica takes over, and idempotency must
hold throughout (nothing lost or doubled, `wallet-core check` clean). The bridge keeps no
state in Redis, so it has nothing to move.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

from tests.faults.conftest import create_database, new_scenario, one_wallet, wallet_env
from tests.faults.processes import Reaper
from tests.faults.traffic import Traffic
from tests.faults.verify import settle_and_verify
from tests.infra.conftest import Results
from tests.infra.engines import RedisCluster

LOAD_S = float(os.environ.get("INFRA_REDIS_SECONDS", "12"))
FAILOVER_WAIT_S = 30.0


async def _role(cluster: RedisCluster, port: int) -> str:
    done = await asyncio.to_thread(
        subprocess.run, [cluster.cli or "redis-cli", "-p", str(port), "role"],
        capture_output=True, text=True, timeout=10)
    return done.stdout.split("\n", 1)[0].strip()


async def _keys(cluster: RedisCluster) -> int:
    total = 0
    for port, proc in cluster.procs.items():
        if proc.alive() and await _role(cluster, port) == "master":
            done = await asyncio.to_thread(
                subprocess.run, [cluster.cli or "redis-cli", "-p", str(port),
                                               "dbsize"],
                capture_output=True, text=True, timeout=10)
            total += int(done.stdout.strip() or 0)
    return total


async def _live_primaries(cluster: RedisCluster, dead: int) -> list[int]:
    return [p for p in cluster.ports if p != dead and cluster.procs[p].alive()
            and await _role(cluster, p) == "master"]


async def test_redis_cluster_primary_killed_mid_load(reaper: Reaper, log_dir: Path,
                                                     results: Results) -> None:
    """Redis Cluster: a primary SIGKILLed mid-load, its replica takes over."""
    cluster = RedisCluster(log_dir)
    reaper.add(cluster.destroy)
    await cluster.start()
    database_url = await create_database(os.environ["DATABASE_URL"], "wallet_infra_redis")
    sc = new_scenario("Redis Cluster: primary killed mid-load")
    _, port = await one_wallet(wallet_env(database_url, cluster.url), reaper, log_dir)
    target = f"127.0.0.1:{port}"
    traffic = Traffic(sc.run_id, [target], clients=16)
    primaries = [p for p in cluster.ports if await _role(cluster, p) == "master"]
    assert len(primaries) == 3, primaries
    victim = primaries[0]
    timeline: dict[str, float] = {}

    async def fault() -> None:
        await asyncio.sleep(LOAD_S / 3)
        timeline["keys_before"] = await _keys(cluster)
        timeline["killed_at"] = time.monotonic()
        cluster.kill(victim)
        # Until the dead primary's replica is a primary (after cluster-node-timeout, the
        # others agree it failed and the replica is elected), then the cluster says ok.
        deadline = time.monotonic() + FAILOVER_WAIT_S
        while len(await _live_primaries(cluster, victim)) < 3:
            if time.monotonic() > deadline:
                raise AssertionError("no replica took over\n" + await cluster.describe())
            await asyncio.sleep(0.1)
        await cluster.wait_ok(timeout_s=FAILOVER_WAIT_S)
        timeline["ok_again_at"] = time.monotonic()

    await traffic.run_while(fault, LOAD_S)
    assert "ok_again_at" in timeline, "the cluster never recovered"
    promoted = await _live_primaries(cluster, victim)
    report = await settle_and_verify(database_url, traffic, sc.report, sc.started, target)
    results.add(**{
        "keys in the cluster before the kill": int(timeline["keys_before"]),
        "primaries after": len(promoted),
        "replica took over, cluster ok after s": round(timeline["ok_again_at"] - timeline["killed_at"], 2),
        "acknowledged": report.acknowledged, "lost": report.lost,
        "duplicated": report.duplicated, "check": report.check,
        "retries answered by a replay": report.notes.get("replayed_after_error", 0),
        "caller errors": ", ".join(f"{k} {v}" for k, v in sorted(report.codes.items())
                                   if k not in ("OK", "FAILED_PRECONDITION")) or "none"})
    assert timeline["keys_before"] > 0, "the wallet wrote nothing to the cluster"
    assert len(promoted) == 3, "the dead primary's replica did not take over"
    report.assert_sound()
    results.passed = True
