"""Fault scenario 4: the wallet's Postgres restarted mid-load. The cluster is a PRIVATE one
this test creates (initdb into a temp dir, pg_ctl on a free port) and destroys; the shared
server is never restarted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.faults.conftest import (
    create_database,
    new_scenario,
    one_wallet,
    traffic_clients,
    traffic_seconds,
    wallet_env,
)
from tests.faults.processes import PrivatePostgres, Reaper
from tests.faults.traffic import Traffic
from tests.faults.verify import settle_and_verify

# How long Postgres stays down: long enough for every client to see UNAVAILABLE.
PG_DOWN_S = 1.5


async def test_postgres_restarted_mid_load(faults_redis_url: str, reaper: Reaper,
                                           log_dir: Path) -> None:
    """Postgres stopped (immediate, like a crash) and started again mid-load: clients see
    UNAVAILABLE, retry with the same keys, and converge with nothing lost or doubled."""
    sc = new_scenario("4. Postgres restarted mid-load")
    pg = PrivatePostgres()
    reaper.add(pg.destroy)
    await asyncio.to_thread(pg.init)
    await asyncio.to_thread(pg.start)
    database_url = await create_database(pg.admin_url, "wallet_faults")
    wallet, port = await one_wallet(wallet_env(database_url, faults_redis_url), reaper, log_dir)
    target = f"127.0.0.1:{port}"
    traffic = Traffic(sc.run_id, [target], clients=traffic_clients())
    duration_s = traffic_seconds()

    async def fault() -> None:
        await asyncio.sleep(duration_s / 4)
        await asyncio.to_thread(pg.stop, "immediate")
        await asyncio.sleep(PG_DOWN_S)
        await asyncio.to_thread(pg.start)
        await asyncio.sleep(duration_s / 4)
        await asyncio.to_thread(pg.stop, "fast")  # a clean restart too
        await asyncio.to_thread(pg.start)

    await traffic.run_while(fault, duration_s)
    report = await settle_and_verify(database_url, traffic, sc.report, sc.started, target)
    report.assert_sound()
    assert report.codes.get("UNAVAILABLE", 0) > 0, "no client ever saw Postgres down"
