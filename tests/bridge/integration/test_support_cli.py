"""Support commands over the real bridge, simulator and wallet: find a payment by any
reference, and force a status sync whose answer the running bridge applies."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson

from gateway_bridge.server import Running as BridgeRunning
from tests.bridge.conftest import Cashier, bridge_env
from tests.helpers import Client
from wallet_core.server import Running as WalletRunning


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway_bridge.cli", *args],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60, check=False)


async def test_find_payment_by_any_reference(
        bridge: BridgeRunning, cashier: Cashier, bridge_db: str, player: str) -> None:
    """The PSP's reference and the cashier's Idempotency-Key both find the payment; an
    unknown reference exits 1."""
    created = await cashier.deposit(player, 7_00)
    env = {"DATABASE_URL": bridge_db}
    for reference in (created["psp_reference"], created["id"]):
        found = await asyncio.to_thread(_cli, env, "find-payment", reference)
        assert found.returncode == 0, found.stderr
        assert [p["id"] for p in orjson.loads(found.stdout)] == [created["id"]]
    missing = await asyncio.to_thread(_cli, env, "find-payment", "pi_nothing_like_it")
    assert missing.returncode == 1


async def test_forced_status_sync_recovers_a_lost_webhook(
        bridge: BridgeRunning, cashier: Cashier, client: Client, server: WalletRunning,
        bridge_db: str, sim: str, bridge_port: int, player: str) -> None:
    """The PSP's webhook is lost; `sync-payment` asks the PSP now, its answer goes through the
    inbox, the running bridge credits the deposit once, and the history says who and why."""
    await client.open(player)
    created = await cashier.deposit(player, 9_00)
    await cashier.knobs(drop_rate=1.0)
    await cashier.complete_deposit(created)
    await asyncio.sleep(0.3)
    assert (await cashier.payment(created["id"]))["state"] != "succeeded"
    env = bridge_env(database_url=bridge_db, wallet_port=server.port, sim_url=sim,
                     bridge_port=bridge_port)
    done = await asyncio.to_thread(_cli, env, "sync-payment", created["id"],
                                   "--reason", "player says paid", "--actor", "dave")
    assert done.returncode == 0, done.stdout + done.stderr
    await cashier.wait_state(created["id"], "succeeded")
    assert (await client.balance(player)).cash == 9_00
    history = (await cashier.payment(created["id"]))["history"]
    assert any(h["source"] == "support" and "dave" in h["note"] for h in history)
    for secret in (env["BRIDGE_STRIPE_API_KEY"], env["BRIDGE_STRIPE_WEBHOOK_SECRET"]):
        assert secret not in done.stdout + done.stderr
