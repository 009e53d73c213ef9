"""Converted deposits end to end on loopback: cashier REST -> bridge (rates from the PSP
simulator's /fx/rates) -> PSP simulator -> signed webhooks -> inbox -> wallet gRPC, checked in
the wallet's balances, its journal and `wallet-core check`; stale and missing rates refused
at the cashier and deferred (never credited stale, never lost) at credit time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from wallet.v1 import wallet_service_pb2 as pb

from gateway_bridge.server import Running as BridgeRunning
from tests.bridge.conftest import BridgeFactory, Cashier
from tests.helpers import SERVICES, Client, wait_for

AGE_MAX_MS = 600


@pytest.fixture
async def fx_bridge(make_bridge: BridgeFactory, sim: str,
                    cashier: Cashier) -> AsyncIterator[BridgeRunning]:
    """A bridge with FX on: rates from the simulator, 150 bps, rates older than 600 ms
    refused (short, so tests can make the cached table stale by waiting)."""
    await cashier.sim("/_sim/fx", {"reset": True})
    async with make_bridge(BRIDGE_FX_RATES_URL=f"{sim}/fx/rates", BRIDGE_FX_SPREAD_BPS="150",
                           BRIDGE_FX_RATE_AGE_MAX_MS=str(AGE_MAX_MS),
                           BRIDGE_FX_TIMEOUT_MS="500") as run:
        yield run
    await cashier.sim("/_sim/fx", {"reset": True})


async def fx(cashier: Cashier, **knobs: Any) -> None:
    await cashier.sim("/_sim/fx", knobs)


async def btc_deposit(cashier: Cashier, player: str, *, key: str,
                      sats: int = 150_000) -> tuple[int, dict[str, Any]]:
    body = {"player_id": player, "amount_minor": sats, "currency": "BTC",
            "wallet_currency": "EUR", "psp": "nowpayments", "method": "crypto",
            "pay_currency": "btc"}
    return await cashier.request("POST", "/v1/deposits", body=body,
                                 headers={"Idempotency-Key": key})


async def stored_payments(conn: asyncpg.Connection, key: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM bridge.payments WHERE client_key = $1",
                                   key))


async def wallet_deposit(client: Client, payment_id: str) -> pb.Transaction:
    reply: pb.GetTransactionResponse = await client.call("GetTransaction", pb.GetTransactionRequest(
        idempotency_key=f"bridge:deposit:{payment_id}", caller=SERVICES["payments"]),
        "support")
    return reply.transaction


async def test_btc_deposit_is_credited_in_eur_at_the_rate_at_credit_time(
        fx_bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        ledger_clean: None) -> None:
    """0.0015 BTC into a EUR wallet: the cashier sees the quote (60000 less 1.5 % = 88.65
    EUR); the rate moves before the payment arrives, and the credit uses the new one
    (59993.23 -> 88.63 EUR), recorded on the payment and in the wallet journal."""
    await fx(cashier, rates={"BTC/EUR": "60000"})
    status, created = await btc_deposit(cashier, player, key=f"fx-{player}")
    assert status == 201, created
    assert created["currency"] == "BTC" and created["wallet_currency"] == "EUR"
    quote = created["fx"]["quote"]
    assert (quote["rate"], quote["spread_bps"], quote["estimated_credit_minor"],
            quote["source"]) == ("60000", 150, 8865, "psp-simulator")
    assert created["instructions"]["pay_currency"] == "btc"

    await fx(cashier, rates={"BTC/EUR": "59993.23"})
    await asyncio.sleep(AGE_MAX_MS / 1000 + 0.1)  # the cached table ages out: a fresh fetch
    await cashier.complete_deposit(created)
    done = await cashier.wait_state(created["id"], "succeeded")
    credit = done["fx"]["credit"]
    assert (credit["rate"], credit["paid_minor"], credit["credited_minor"]) == (
        "59993.23", 150_000, 8863)
    assert done["settled_minor"] == 150_000
    assert "credited 8863 EUR" in done["history"][-1]["note"]
    assert (await client.balance(player, "EUR")).cash == 8863

    tx = await wallet_deposit(client, created["id"])
    assert tx.currency == "EUR"
    assert {(p.account, p.currency, p.amount) for p in tx.postings
            if not p.account.startswith("player:")} == {
        ("psp:nowpayments", "BTC", -150_000), ("fx:BTC", "BTC", 150_000),
        ("fx:EUR", "EUR", -8863)}
    assert (tx.details["fx_rate"], tx.details["fx_spread_bps"],
            tx.details["fx_rate_source"]) == ("59993.23", "150", "psp-simulator")

    again_status, again = await btc_deposit(cashier, player, key=f"fx-{player}")
    assert again_status == 200 and again["id"] == created["id"]


async def test_stale_rate_at_the_cashier_is_refused_and_nothing_is_stored(
        fx_bridge: BridgeRunning, cashier: Cashier, bridge_conn: asyncpg.Connection,
        player: str) -> None:
    """A provider serving an old table: 503 FX_RATE_STALE naming the pair, Retry-After, no
    payment; provider down: 503 FX_RATE_UNAVAILABLE; a pair it does not quote: 422."""
    await fx(cashier, stale_ms=60_000)
    async with cashier.http.post(cashier.url + "/v1/deposits", json={
            "player_id": player, "amount_minor": 150_000, "currency": "BTC",
            "wallet_currency": "EUR", "psp": "nowpayments", "method": "crypto",
            "pay_currency": "btc"}, headers={**cashier.auth,
                                              "Idempotency-Key": f"stale-{player}"}) as r:
        body = await r.json()
        assert r.status == 503 and r.headers["Retry-After"].isdigit()
    assert body["error"]["code"] == "FX_RATE_STALE"
    assert "BTC/EUR" in body["error"]["message"]
    assert await stored_payments(bridge_conn, f"stale-{player}") == 0

    await fx(cashier, stale_ms=0, down=True)
    await asyncio.sleep(0.6)  # past the failure back-off
    status, body = await btc_deposit(cashier, player, key=f"down-{player}")
    assert (status, body["error"]["code"]) == (503, "FX_RATE_UNAVAILABLE"), body
    assert await stored_payments(bridge_conn, f"down-{player}") == 0

    await fx(cashier, down=False, rates={"BTC/EUR": None})
    await asyncio.sleep(0.6)
    status, body = await btc_deposit(cashier, player, key=f"pair-{player}")
    assert (status, body["error"]["code"]) == (422, "FX_PAIR_UNSUPPORTED"), body
    assert await stored_payments(bridge_conn, f"pair-{player}") == 0

    await fx(cashier, rates={"BTC/EUR": "60000"})
    await asyncio.sleep(AGE_MAX_MS / 1000 + 0.1)  # the cached table (without it) ages out
    status, body = await btc_deposit(cashier, player, key=f"tiny-{player}", sats=1)
    assert (status, body["error"]["code"], body["error"]["field"]) == (
        422, "FX_AMOUNT_TOO_SMALL", "amount_minor"), body


async def test_fx_off_refuses_paying_in_another_currency(
        bridge: BridgeRunning, cashier: Cashier, bridge_conn: asyncpg.Connection,
        player: str) -> None:
    """Without BRIDGE_FX_RATES_URL a deposit into another wallet currency is 422
    FX_NOT_ENABLED; the same currency named twice is a plain deposit."""
    status, body = await btc_deposit(cashier, player, key=f"off-{player}")
    assert (status, body["error"]["code"]) == (422, "FX_NOT_ENABLED"), body
    assert await stored_payments(bridge_conn, f"off-{player}") == 0
    created = await cashier.deposit(player, 10_00, wallet_currency="USD")
    assert "wallet_currency" not in created


@pytest.mark.parametrize("trouble", [{"stale_ms": 60_000}, {"down": True}])
async def test_no_fresh_rate_at_credit_time_defers_until_fresh(
        fx_bridge: BridgeRunning, cashier: Cashier, client: Client,
        bridge_conn: asyncpg.Connection, player: str, trouble: dict[str, Any],
        ledger_clean: None) -> None:
    """The payment is reported paid while the provider is stale (or down): not credited, the
    event retried; once rates are fresh again it is credited once, at the fresh rate."""
    await fx(cashier, rates={"BTC/EUR": "60000"})
    status, created = await btc_deposit(cashier, player, key=f"late-{player}")
    assert status == 201, created
    await fx(cashier, **trouble)
    await asyncio.sleep(AGE_MAX_MS / 1000 + 0.1)
    await cashier.complete_deposit(created)
    await cashier.flush()
    finished_sql = ("SELECT status, attempts, last_error FROM bridge.inbox "
                    "WHERE payment_id = $1 AND psp_event_type = 'finished'")

    async def tried() -> bool:
        row = await bridge_conn.fetchrow(finished_sql, created["id"])
        return row is not None and row["attempts"] >= 1
    await wait_for(tried)
    p = await cashier.payment(created["id"])
    assert p["state"] in ("pending", "processing") and p["settled_minor"] == 0, p
    row = await bridge_conn.fetchrow(finished_sql, created["id"])
    assert row["status"] == "pending" and row["attempts"] >= 1, dict(row)
    assert "not credited yet" in row["last_error"] and "BTC/EUR" in row["last_error"]
    assert (await client.balance(player, "EUR")).cash == 0

    await fx(cashier, stale_ms=0, down=False, rates={"BTC/EUR": "61000"})
    done = await cashier.wait_state(created["id"], "succeeded")
    # 0.0015 x 61000 = 91.50 EUR, less 1.5 % = 90.1275 -> 90.12
    assert done["fx"]["credit"]["credited_minor"] == 9012
    assert (await client.balance(player, "EUR")).cash == 9012


async def test_card_chargeback_of_a_converted_deposit_takes_back_its_share(
        fx_bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        ledger_clean: None) -> None:
    """100.00 USD paid by card into a EUR wallet at 0.9259 (91.20 EUR credited); a 50.00
    USD dispute takes back half the credit, 45.60 EUR, in the wallet's currency."""
    await fx(cashier, rates={"USD/EUR": "0.9259"})
    created = await cashier.deposit(player, 100_00, currency="USD", wallet_currency="EUR",
                                    key=f"card-{player}")
    assert created["fx"]["quote"]["estimated_credit_minor"] == 9120
    await cashier.complete_deposit(created)
    await cashier.wait_state(created["id"], "succeeded")
    assert (await client.balance(player, "EUR")).cash == 9120
    await cashier.chargeback(created, amount_minor=50_00)
    done = await cashier.wait_state(created["id"], "charged_back")
    assert done["charged_back_minor"] == 50_00
    assert done["fx"]["charged_back_wallet_minor"] == 4560
    assert "= 4560 EUR" in done["history"][-1]["note"]
    assert (await client.balance(player, "EUR")).cash == 4560
