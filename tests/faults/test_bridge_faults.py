"""Fault scenario 6: the bridge SIGKILLed between storing a webhook and calling the wallet,
and again while applying, under PSP-simulator storms of duplicated and reordered webhooks.

The bridge and the wallet are real subprocesses; the simulator runs in the test's loop and
retries deliveries the dead bridge did not answer, as PSPs do. Every deposit a PSP completed
must be credited exactly once (one journal row under `bridge:deposit:<payment id>`, the
player's cash equal to the amount), and no inbox event may be left pending or dead.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from loadtests.ports import lease_port
from psp_simulator import config as sim_config
from psp_simulator.app import running as sim_running
from tests.bridge.conftest import DEFAULT_KNOBS, PSP_ENV, Cashier, bridge_env
from tests.faults.conftest import new_scenario, traffic_seconds, wallet_env
from tests.faults.processes import (
    PROCESS_READY_TIMEOUT_S,
    Proc,
    Reaper,
    start_wallet,
    wallet_proc,
)
from tests.faults.verify import Report, run_check

PSPS = ("stripe", "adyen", "nowpayments")
# Payments per phase: bounded so the scenario stays in seconds; FAULTS_SECONDS scales it.
PAYMENTS_PER_PHASE = max(12, int(traffic_seconds() * 3))
SETTLE_TIMEOUT_S = 60.0
STORM = {"duplicate_count": 3, "reorder": True}


@pytest.fixture
async def sim_url(reaper: Reaper) -> AsyncIterator[tuple[str, int]]:
    bridge_port = lease_port()
    settings = sim_config.load({**PSP_ENV, "SIM_LISTEN_ADDR": "127.0.0.1:0",
                                "SIM_WEBHOOK_BASE_URL": f"http://127.0.0.1:{bridge_port}",
                                # Like PSPs, keep retrying a bridge that is down a while.
                                "SIM_WEBHOOK_ATTEMPTS_MAX": "12",
                                "SIM_WEBHOOK_RETRY_BACKOFF_MS": "100",
                                "SIM_WEBHOOK_SENDERS": "4"})
    async with sim_running(settings) as port:
        yield f"http://127.0.0.1:{port}", bridge_port


def _bridge(n: int, *, database_url: str, wallet_port: int, sim: str, bridge_port: int,
            log_dir: Path) -> Proc:
    env = {**os.environ, **bridge_env(database_url=database_url, wallet_port=wallet_port,
                                      sim_url=sim, bridge_port=bridge_port),
           "BRIDGE_INBOX_BACKOFF_MS": "50", "BRIDGE_INBOX_BACKOFF_MAX_MS": "300",
           "BRIDGE_INBOX_ATTEMPTS_MAX": "200"}
    return Proc(f"bridge-{n}", [sys.executable, "-m", "gateway_bridge", "serve"], env,
                log_dir / f"bridge-{n}.log")


async def _start_bridge(proc: Proc, cashier: Cashier) -> None:
    proc.start()
    started = time.monotonic()
    while True:
        try:
            status, _ = await cashier.request("GET", "/healthz")
            if status == 200:
                return
        except (TimeoutError, OSError, aiohttp.ClientError):
            pass
        if not proc.alive() or time.monotonic() - started > PROCESS_READY_TIMEOUT_S:
            raise AssertionError(proc.describe_exit())
        await asyncio.sleep(0.1)


async def _pending_inbox(conn: asyncpg.Connection, payment_ids: list[str]) -> int:
    return int(await conn.fetchval(
        "SELECT count(DISTINCT payment_id) FROM bridge.inbox "
        "WHERE payment_id = ANY($1) AND status = 'pending'", payment_ids))


async def _deposits(cashier: Cashier, run_id: str, phase: str) -> list[dict[str, Any]]:
    created = []
    for n in range(PAYMENTS_PER_PHASE):
        psp = PSPS[n % len(PSPS)]
        player = f"{run_id}-{phase}{n}"
        created.append(await cashier.deposit(player, 10_00 + n, psp=psp,
                                             key=f"{run_id}-{phase}-{n}"))
    return created


async def test_bridge_killed_between_storing_and_applying_under_webhook_storms(
        faults_database_url: str, faults_redis_url: str, reaper: Reaper, log_dir: Path,
        sim_url: tuple[str, int]) -> None:
    """Bridge SIGKILLed after storing webhooks and again mid-apply, under duplicate/reordered
    storms: every completed deposit is credited exactly once after restart."""
    sc = new_scenario("6. bridge SIGKILLed under webhook storms")
    sim, bridge_port = sim_url
    wallet_port = lease_port()
    wallet = wallet_proc("wallet", env=wallet_env(faults_database_url, faults_redis_url),
                         port=wallet_port, log_dir=log_dir)
    reaper.add(wallet.kill)
    await start_wallet(wallet, wallet_port)
    bridges: list[Proc] = []

    def bridge(wallet_at: int) -> Proc:
        proc = _bridge(len(bridges) + 1, database_url=faults_database_url,
                       wallet_port=wallet_at, sim=sim, bridge_port=bridge_port,
                       log_dir=log_dir)
        bridges.append(proc)
        reaper.add(proc.kill)
        return proc

    conn = await asyncpg.connect(faults_database_url, timeout=10)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        cashier = Cashier(http, f"http://127.0.0.1:{bridge_port}", sim)
        try:
            payments = await _run_phases(sc.run_id, cashier, bridge, wallet_port, conn)
            report = await _verify(sc.report, conn, payments, cashier, faults_database_url)
        finally:
            await cashier.knobs(**DEFAULT_KNOBS)
            await conn.close()
    report.seconds = round(time.monotonic() - sc.started, 1)
    report.notes["bridge_starts"] = len(bridges)
    report.append_to_results()
    report.assert_sound()


async def _run_phases(run_id: str, cashier: Cashier, bridge: Any, wallet_port: int,
                      conn: asyncpg.Connection) -> list[dict[str, Any]]:
    # Phase 0: the payments exist at the PSP and in the bridge.
    first = bridge(wallet_port)
    await _start_bridge(first, cashier)
    stored_only = await _deposits(cashier, run_id, "a")
    mid_apply = await _deposits(cashier, run_id, "b")
    first.kill()
    # Phase 1: a bridge that cannot reach the wallet stores the storm, then is SIGKILLed:
    # webhooks acknowledged and in bridge.inbox, the wallet never called.
    cut_off = bridge(lease_port())
    await _start_bridge(cut_off, cashier)
    await cashier.knobs(**STORM)
    deliveries = 0
    for p in stored_only:
        deliveries += int((await cashier.complete_deposit(p)).get("deliveries", 0))
    ids = [p["id"] for p in stored_only]
    async with asyncio.timeout(SETTLE_TIMEOUT_S):
        while await _pending_inbox(conn, ids) < len(ids):
            await asyncio.sleep(0.05)
    cut_off.kill()
    # Phase 2: a bridge with the wallet, SIGKILLed while it applies and the storm goes on.
    applying = bridge(wallet_port)
    await _start_bridge(applying, cashier)
    for p in mid_apply:
        deliveries += int((await cashier.complete_deposit(p)).get("deliveries", 0))
    await asyncio.sleep(0.3)
    applying.kill()
    # Phase 3: the last bridge must finish everything, exactly once.
    final = bridge(wallet_port)
    await _start_bridge(final, cashier)
    payments = stored_only + mid_apply
    async with asyncio.timeout(SETTLE_TIMEOUT_S):
        for p in payments:
            await cashier.wait_state(p["id"], "succeeded", timeout_s=SETTLE_TIMEOUT_S)
    await cashier.flush()  # every duplicate delivered, so a late one could show its effect
    await asyncio.sleep(0.5)
    for p in payments:
        p["_deliveries_total"] = deliveries
    return payments


async def _verify(report: Report, conn: asyncpg.Connection, payments: list[dict[str, Any]],
                  cashier: Cashier, database_url: str) -> Report:
    ids = [p["id"] for p in payments]
    rows = await conn.fetch(
        "SELECT j.idempotency_key, j.id, w.player_id, w.cash FROM wallet.journal j "
        "JOIN wallet.wallets w ON w.id = j.wallet_id "
        "WHERE j.caller = 'payments-service' AND j.idempotency_key = ANY($1)",
        [f"bridge:deposit:{i}" for i in ids])
    by_key: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        by_key.setdefault(r["idempotency_key"], []).append(r)
    report.attempted = len(payments)
    for p in payments:
        found = by_key.get(f"bridge:deposit:{p['id']}", [])
        state = (await cashier.payment(p["id"]))["state"]
        report.acknowledged += state == "succeeded"
        report.found_in_ledger += bool(found)
        report.lost += not found
        report.duplicated += max(0, len(found) - 1)
        if len(found) == 1 and found[0]["cash"] != p["amount_minor"]:
            report.balance_mismatches += 1
            report.problems.append(f"{p['id']}: cash {found[0]['cash']} for a deposit of "
                                   f"{p['amount_minor']}")
    left = await conn.fetch("SELECT status, count(*) AS n FROM bridge.inbox "
                            "WHERE payment_id = ANY($1) GROUP BY status", ids)
    statuses = {r["status"]: r["n"] for r in left}
    report.notes["inbox_events"] = statuses
    report.problems += [f"{n} inbox events left {s}" for s, n in statuses.items()
                        if s in ("pending", "dead")]
    report.codes = {"webhook_deliveries_queued": payments[0]["_deliveries_total"],
                    "webhook_events_stored": sum(statuses.values())}
    report.check = run_check(database_url)
    return report
