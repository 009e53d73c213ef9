"""The bridge under faults: wallet down, bridge SIGKILLed after acknowledging, dead letters
replayed by support, a failing PSP tripping the breaker, lost webhooks found by status sync."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import asyncpg

from gateway_bridge.server import Running as BridgeRunning
from gateway_bridge.wallet.client import WalletUnavailable
from loadtests.ports import lease_port
from tests.bridge.clis import walletctl
from tests.bridge.conftest import (
    API_KEY,
    OTHER_API_KEY,
    BridgeFactory,
    Cashier,
    bridge_env,
)
from tests.helpers import Client, wait_for
from wallet_core import config as wallet_config
from wallet_core.server import running as wallet_running


async def _wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await predicate():
            await asyncio.sleep(0.05)


async def _inbox(conn: asyncpg.Connection, payment_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT id, status, attempts, last_error FROM bridge.inbox "
                            "WHERE payment_id = $1 ORDER BY id", payment_id)


async def test_wallet_down_webhooks_are_acknowledged_stored_and_applied_when_it_returns(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection,
        custom_settings: Callable[..., wallet_config.Settings], ledger_clean: None) -> None:
    """Webhooks arrive while the wallet is unreachable: 2xx, stored, retried, applied later."""
    async with make_bridge():
        created = await cashier.deposit(player, 33_00, psp="adyen")
    wallet_port = lease_port()
    async with make_bridge(wallet_port=wallet_port):
        await cashier.complete_deposit(created)
        await cashier.flush()

        async def retried() -> bool:
            rows = await _inbox(bridge_conn, created["id"])
            return bool(rows) and rows[0]["attempts"] >= 2
        await _wait_for(retried)
        rows = await _inbox(bridge_conn, created["id"])
        assert rows[0]["status"] == "pending" and "wallet unavailable" in rows[0]["last_error"]
        assert (await client.balance(player)).cash == 0
        async with wallet_running(custom_settings(listen_addr=f"127.0.0.1:{wallet_port}")):
            await cashier.wait_state(created["id"], "succeeded")
    assert (await client.balance(player)).cash == 33_00


async def test_exhausted_events_are_dead_lettered_and_replayed_by_support(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, bridge_db: str, ledger_clean: None) -> None:
    """After the attempts budget the event is dead; `walletctl dead-letters` lists and
    replays it."""
    async with make_bridge():
        created = await cashier.deposit(player, 12_00, psp="stripe")
    async with make_bridge(wallet_port=lease_port(), BRIDGE_INBOX_ATTEMPTS_MAX="2"):
        await cashier.complete_deposit(created)
        await cashier.flush()

        async def dead() -> bool:
            rows = await _inbox(bridge_conn, created["id"])
            return bool(rows) and rows[0]["status"] == "dead"
        await _wait_for(dead)
    payment = await bridge_conn.fetchrow("SELECT state, attention FROM bridge.payments "
                                         "WHERE id = $1", created["id"])
    assert payment["state"] == "pending" and "dead-lettered" in payment["attention"]
    env = {"DATABASE_URL": bridge_db}
    listed = await asyncio.to_thread(walletctl, env, "dead-letters", "list")
    assert listed.returncode == 0, listed.stderr
    event_id = (await _inbox(bridge_conn, created["id"]))[0]["id"]
    assert str(event_id) in listed.stdout and created["id"] in listed.stdout
    replayed = await asyncio.to_thread(walletctl, env, "dead-letters", "replay",
                                       "--id", str(event_id))
    assert replayed.returncode == 0, replayed.stderr
    async with make_bridge():
        await cashier.wait_state(created["id"], "succeeded")
    assert (await client.balance(player)).cash == 12_00


async def test_bridge_killed_after_acknowledging_credits_exactly_once_on_restart(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, bridge_db: str, sim: str, bridge_port: int,
        ledger_clean: None) -> None:
    """SIGKILL between storing+2xx and the wallet call: the restarted bridge credits once."""
    async with make_bridge():
        created = await cashier.deposit(player, 44_00, psp="nowpayments")
    # A real bridge process whose wallet is out of reach, so it stores but cannot apply.
    env = {**os.environ, **bridge_env(database_url=bridge_db, wallet_port=lease_port(),
                                      sim_url=sim, bridge_port=bridge_port)}
    proc = subprocess.Popen([sys.executable, "-m", "gateway_bridge", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async def ready() -> bool:
            try:
                status, _ = await cashier.request("GET", "/healthz")
                return status == 200
            except OSError:
                return False
        await _wait_for(ready, timeout_s=20)
        await cashier.complete_deposit(created)
        await cashier.flush()

        async def stored() -> bool:
            return any(r["status"] == "pending" for r in await _inbox(bridge_conn, created["id"]))
        await _wait_for(stored)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert (await client.balance(player)).cash == 0
    async with make_bridge():
        await cashier.wait_state(created["id"], "succeeded")
        await asyncio.sleep(0.3)  # give any wrongly repeated apply a chance to show
    assert (await client.balance(player)).cash == 44_00
    statuses = [r["status"] for r in await _inbox(bridge_conn, created["id"])]
    assert "pending" not in statuses and statuses.count("applied") >= 1


async def test_failing_psp_opens_the_breaker_and_deposits_are_refused_clearly(
        make_bridge: BridgeFactory, cashier: Cashier, player: str) -> None:
    """PSP down: deposits fail, the breaker opens (503 PSP_UNAVAILABLE at once), then heals."""
    # A cool-down long enough that a slow machine cannot let it lapse before the breaker's
    # open answers below are seen.
    async with make_bridge(BRIDGE_PSP_BREAKER_COOLDOWN_MS="3000"):
        await cashier.knobs(down=True)
        codes = []
        for n in range(4):
            status, body = await cashier.request("POST", "/v1/deposits", body={
                "player_id": player, "amount_minor": 5_00, "currency": "USD", "psp": "stripe",
                "method": "card"}, headers={"Idempotency-Key": f"brk-{n}"})
            codes.append((status, body["error"]["code"]))
        assert set(codes) == {(503, "PSP_UNAVAILABLE")}
        status, ready = await cashier.request("GET", "/readyz")
        assert ready["psps"]["stripe"] == "circuit_open" and ready["psps"]["adyen"] == "up"
        status, body = await cashier.request("POST", "/v1/deposits", body={
            "player_id": player, "amount_minor": 5_00, "currency": "USD", "psp": "stripe",
            "method": "card"}, headers={"Idempotency-Key": "brk-open"})
        assert status == 503 and "circuit open" in body["error"]["message"]
        await cashier.knobs(down=False)

        async def cooled() -> bool:
            return (await cashier.request("GET", "/readyz"))[1]["psps"]["stripe"] == "up"
        await wait_for(cooled)
        ok = await cashier.deposit(player, 5_00, psp="stripe", key="brk-after")
        assert ok["state"] == "pending"


async def test_lost_webhook_is_recovered_by_status_sync(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        ledger_clean: None) -> None:
    """Every webhook dropped: the status sync polls the PSP past the limit and credits."""
    async with make_bridge(BRIDGE_STRIPE_PENDING_LIMIT_MS="200",
                           BRIDGE_SYNC_SCHEDULE_MS="200,200,200,200,200"):
        await cashier.knobs(drop_rate=1)
        created = await cashier.deposit(player, 18_00, psp="stripe")
        await cashier.complete_deposit(created)
        done = await cashier.wait_state(created["id"], "succeeded")
        assert done["history"][-1]["source"] == "poll"
    assert (await client.balance(player)).cash == 18_00


async def test_payment_nobody_answers_for_times_out_then_late_truth_still_applies(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        ledger_clean: None) -> None:
    """No final answer after the poll schedule: `timed_out` for support; a late success still
    credits, because timed_out is not terminal."""
    async with make_bridge(BRIDGE_ADYEN_PENDING_LIMIT_MS="100",
                           BRIDGE_SYNC_SCHEDULE_MS="100,100,100"):
        created = await cashier.deposit(player, 9_00, psp="adyen")
        timed_out = await cashier.wait_state(created["id"], "timed_out")
        assert "status checks" in timed_out["attention"]
        await cashier.complete_deposit(created)
        await cashier.wait_state(created["id"], "succeeded")
    assert (await client.balance(player)).cash == 9_00


async def test_other_clients_cannot_read_a_payment(
        make_bridge: BridgeFactory, cashier: Cashier, player: str) -> None:
    """A payment is visible only to the cashier client that created it."""
    async with make_bridge():
        created = await cashier.deposit(player, 1_00)
        status, _ = await cashier.request("GET", f"/v1/payments/{created['id']}",
                                          headers={"Authorization": f"Bearer {API_KEY}x"})
        assert status == 401
        status, body = await cashier.request(
            "GET", f"/v1/payments/{created['id']}",
            headers={"Authorization": f"Bearer {OTHER_API_KEY}"})
        assert (status, body["error"]["code"]) == (404, "NOT_FOUND")


async def test_lost_wallet_reply_is_retried_with_the_same_key_and_credits_once(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """The wallet commits the deposit but its reply is lost (as DEADLINE_EXCEEDED looks to a
    client): the worker retries with the same key, gets the recorded outcome, credits once."""
    wallet = bridge.services.inbox._wallet  # the real client; the wire call still happens
    real_deposit = wallet.deposit
    lost: list[str] = []

    async def deposit_then_lose_reply(**kwargs: Any) -> str:
        transaction_id = await real_deposit(**kwargs)
        if not lost:
            lost.append(transaction_id)
            raise WalletUnavailable("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", "reply lost")
        return transaction_id

    wallet.deposit = deposit_then_lose_reply  # type: ignore[method-assign]
    try:
        created = await cashier.deposit(player, 27_00, psp="stripe")
        await cashier.complete_deposit(created)
        await cashier.wait_state(created["id"], "succeeded")
    finally:
        wallet.deposit = real_deposit  # type: ignore[method-assign]
    assert lost, "the reply was never lost: the test did not exercise the retry"
    rows = await _inbox(bridge_conn, created["id"])
    assert rows[0]["attempts"] >= 2 and rows[0]["status"] == "applied"
    assert (await client.balance(player)).cash == 27_00


async def test_an_event_that_breaks_the_worker_is_parked_and_the_others_go_on(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """A stored event the worker can't handle (here: a row no adapter could have written) is
    dead-lettered with a neutral note; later events are still applied."""
    bad_id = await bridge_conn.fetchval(
        "INSERT INTO bridge.inbox (psp, event_key, source, kind, psp_event_type, event) "
        "VALUES ('stripe', $1, 'webhook', 'deposit_succeeded', 'broken', '{\"psp\": 1}') "
        "RETURNING id", f"broken-{player}")
    created = await cashier.deposit(player, 6_00)
    await cashier.complete_deposit(created)
    await cashier.wait_state(created["id"], "succeeded")

    async def parked() -> bool:
        row = await bridge_conn.fetchrow("SELECT status, last_error FROM bridge.inbox "
                                         "WHERE id = $1", bad_id)
        return bool(row["status"] == "dead")
    await _wait_for(parked)
    note = await bridge_conn.fetchval("SELECT last_error FROM bridge.inbox WHERE id = $1",
                                      bad_id)
    assert "internal error" in note and "Traceback" not in note
    assert (await client.balance(player)).cash == 6_00


async def test_lost_commit_reply_then_failure_event_still_ends_reversed(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """payout.paid commits but its reply is lost; payout.failed comes next and the wallet says
    the withdrawal is already final. That refusal waits for the lost commit's retry instead
    of being dead-lettered, then becomes a reversal: the money is back in cash."""
    wallet = bridge.services.inbox._wallet
    real_commit = wallet.commit
    lost: list[str] = []

    async def commit_then_lose_reply(**kwargs: Any) -> str:
        transaction_id = await real_commit(**kwargs)
        if not lost:
            lost.append(transaction_id)
            raise WalletUnavailable("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", "reply lost")
        return transaction_id

    wallet.commit = commit_then_lose_reply  # type: ignore[method-assign]
    try:
        await client.funded(player, 40_00)
        created = await cashier.withdraw(player, 25_00, psp="stripe")
        await cashier.complete_payout(created, "reversed")
        done = await cashier.wait_state(created["id"], "reversed")
    finally:
        wallet.commit = real_commit  # type: ignore[method-assign]
    assert lost
    statuses = [r["status"] for r in await _inbox(bridge_conn, created["id"])]
    assert "dead" not in statuses, (statuses, done["history"])
    b = await client.balance(player)
    assert (b.cash, b.reserved) == (40_00, 0)
