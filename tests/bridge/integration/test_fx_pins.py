"""What a converted credit or chargeback sends to the wallet stays the same across retries
under one wallet key, end to end on loopback (cashier -> simulator -> webhooks -> inbox ->
wallet gRPC): a dispute's debit survives a lost reply while another dispute is applied; a
rate pin survives a lost reply even once it aged out (the wallet says it recorded it), is
re-priced when it aged out and the wallet recorded nothing, and is dropped when the credit
was refused outright. The inbox worker holds no second connection while the rates provider is
slow, and a credit above the wallet currency's cap is refused before the PSP is asked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from gateway_bridge.server import Running as BridgeRunning
from gateway_bridge.wallet.client import WalletUnavailable
from tests.bridge.conftest import BridgeFactory, Cashier, wallet_away
from tests.bridge.integration.test_fx_flows import AGE_MAX_MS, btc_deposit, fx, stored_payments
from tests.helpers import Client, wait_for

# Retries come 1.25..2.5 s after a failure: past the rate's maximum age (600 ms) and past
# twice the wallet timeout (2 x 500 ms), so a retry finds its pin stale and its call over.
SLOW_RETRY_ENV = {"BRIDGE_INBOX_BACKOFF_MS": "2500", "BRIDGE_INBOX_BACKOFF_MAX_MS": "2500",
                  "BRIDGE_WALLET_TIMEOUT_MS": "500"}
# A rates provider this slow keeps an inbox worker waiting long after it claimed its event:
# the connections in use are sampled for the first second of that wait, leaving 2 s for a
# slow claim or a stalled event loop before a sample could see the pin being written. The
# provider timeout (the bridge's bound: at most the statement timeout, 5 s) outlasts it.
SLOW_FX_LATENCY_MS = 3000
SLOW_FX_SAMPLING_MS = 1000
SLOW_FX_TIMEOUT_MS = 4000


@asynccontextmanager
async def fx_bridge(make_bridge: BridgeFactory, cashier: Cashier, *, workers: bool = True,
                    env: dict[str, str] | None = None) -> AsyncIterator[BridgeRunning]:
    await cashier.sim("/_sim/fx", {"reset": True})
    # `env` may override these (a longer provider timeout for a slower provider).
    overrides = {"BRIDGE_FX_TIMEOUT_MS": "1500", **(env or {})}
    async with make_bridge(BRIDGE_FX_RATES_URL=f"{cashier.sim_url}/fx/rates",
                           BRIDGE_FX_SPREAD_BPS="150", workers=workers,
                           BRIDGE_FX_RATE_AGE_MAX_MS=str(AGE_MAX_MS), **overrides) as run:
        yield run
    await cashier.sim("/_sim/fx", {"reset": True})


async def dead_events(conn: asyncpg.Connection, since_id: int) -> list[str]:
    return [r["last_error"] for r in await conn.fetch(
        "SELECT last_error FROM bridge.inbox WHERE id > $1 AND status = 'dead'", since_id)]


async def last_inbox_id(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM bridge.inbox"))


async def test_dispute_retried_after_another_was_applied_keeps_its_debit(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """100.00 USD credited 91.20 EUR. Dispute D1 (33.33 USD) is recorded by the wallet but
    its reply is lost; D2 (33.33 USD) is applied meanwhile; D1's retry sends the debit it
    first sent (the wallet replays it: no IDEMPOTENCY_KEY_REUSED, no dead letter); a last
    dispute for the rest takes exactly what is left: 91.20 EUR in all, never more."""
    async with fx_bridge(make_bridge, cashier, env=SLOW_RETRY_ENV) as bridge:
        await fx(cashier, rates={"USD/EUR": "0.9259"})
        created = await cashier.deposit(player, 100_00, currency="USD",
                                        wallet_currency="EUR", key=f"cb-{player}")
        await cashier.complete_deposit(created)
        await cashier.wait_state(created["id"], "succeeded")
        assert (await client.balance(player, "EUR")).cash == 9120
        since = await last_inbox_id(bridge_conn)

        wallet = bridge.services.inbox._wallet  # the real client; the wire call happens
        real_chargeback = wallet.chargeback
        lost: list[int] = []

        async def chargeback_then_lose_reply(**kwargs: Any) -> str:
            transaction_id = await real_chargeback(**kwargs)
            if not lost:
                lost.append(kwargs["amount_minor"])
                raise WalletUnavailable("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", "reply lost")
            return transaction_id

        wallet.chargeback = chargeback_then_lose_reply  # type: ignore[method-assign]
        try:
            await cashier.chargeback(created, amount_minor=33_33)  # D1: reply lost

            async def d1_lost() -> bool:
                return bool(lost)
            await wait_for(d1_lost)
            d1_id = await bridge_conn.fetchval(
                "SELECT id FROM bridge.inbox WHERE id > $1 AND status = 'pending'", since)
            assert d1_id is not None
            # D1's back-off (1.25..2.5 s) could run out before D2 is applied on a slow
            # machine: D1 waits until released below. The worker holds D1's row until it has
            # recorded the failure and its back-off, so this lands after that.
            assert await bridge_conn.execute(
                "UPDATE bridge.inbox SET next_attempt_at = now() + interval '1 hour' "
                "WHERE id = $1", d1_id) == "UPDATE 1"
            await cashier.chargeback(created, amount_minor=33_33)  # D2, applied first

            async def d2_applied() -> bool:
                p = await cashier.payment(created["id"])
                return bool(p["charged_back_minor"] == 33_33)
            await wait_for(d2_applied)
            assert await bridge_conn.fetchval(
                "SELECT status FROM bridge.inbox WHERE id = $1", d1_id) == "pending"
            # D1's retry now
            await bridge_conn.execute("UPDATE bridge.inbox SET next_attempt_at = now() "
                                      "WHERE id = $1", d1_id)
            bridge.services.inbox.wake()

            async def d1_applied() -> bool:
                p = await cashier.payment(created["id"])
                return bool(p["charged_back_minor"] == 66_66)
            await wait_for(d1_applied)
        finally:
            wallet.chargeback = real_chargeback  # type: ignore[method-assign]
        assert lost == [3039]
        assert await dead_events(bridge_conn, since) == []
        p = await cashier.payment(created["id"])
        cash = (await client.balance(player, "EUR")).cash
        assert p["fx"]["charged_back_wallet_minor"] == 9120 - cash == 3039 + 3040

        await cashier.chargeback(created, amount_minor=33_34)  # the rest

        async def all_back() -> bool:
            p = await cashier.payment(created["id"])
            return bool(p["charged_back_minor"] == 100_00)
        await wait_for(all_back)
        p = await cashier.payment(created["id"])
        assert (await client.balance(player, "EUR")).cash == 0
        assert p["fx"]["charged_back_wallet_minor"] == 9120
        assert await dead_events(bridge_conn, since) == []


async def pinned_rate(conn: asyncpg.Connection, payment_id: str) -> str | None:
    rate = await conn.fetchval("SELECT rate FROM bridge.fx_rate_pins WHERE wallet_key = $1",
                               f"bridge:deposit:{payment_id}")
    return None if rate is None else str(rate)


async def test_lost_reply_retried_after_the_pin_aged_out_replays_the_pinned_rate(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """The wallet records the credit at 60000 but its reply is lost; the rate moves to 61000
    and the retry comes after the pin's rate aged out: the wallet says the key is recorded,
    so the retry sends the pinned rate and the wallet replays it. Credited once, 88.65 EUR."""
    async with fx_bridge(make_bridge, cashier, env=SLOW_RETRY_ENV) as bridge:
        await fx(cashier, rates={"BTC/EUR": "60000"})
        status, created = await btc_deposit(cashier, player, key=f"lost-{player}")
        assert status == 201, created
        since = await last_inbox_id(bridge_conn)
        wallet = bridge.services.inbox._wallet
        real_deposit = wallet.deposit
        sent: list[tuple[int, str]] = []

        async def deposit_then_lose_reply(**kwargs: Any) -> str:
            transaction_id = await real_deposit(**kwargs)
            sent.append((kwargs["amount_minor"], kwargs["conversion"].rate))
            if len(sent) == 1:
                raise WalletUnavailable("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", "reply lost")
            return transaction_id

        wallet.deposit = deposit_then_lose_reply  # type: ignore[method-assign]
        try:
            await cashier.complete_deposit(created)

            async def first_sent() -> bool:
                return bool(sent)
            await wait_for(first_sent)
            await fx(cashier, rates={"BTC/EUR": "61000"})
            done = await cashier.wait_state(created["id"], "succeeded")
        finally:
            wallet.deposit = real_deposit  # type: ignore[method-assign]
        assert sent == [(8865, "60000"), (8865, "60000")]
        assert done["fx"]["credit"]["credited_minor"] == 8865
        assert (await client.balance(player, "EUR")).cash == 8865
        assert await dead_events(bridge_conn, since) == []


async def test_stale_pin_the_wallet_never_recorded_gets_a_fresh_rate(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """The first credit attempt pins 60000 but the wallet is unreachable (a port nobody
    listens on: nothing recorded). The retry comes after that rate aged out; the wallet has
    nothing under the key, so the credit is re-priced at the fresh 61000: 90.12 EUR."""
    async with fx_bridge(make_bridge, cashier, env=SLOW_RETRY_ENV) as bridge:
        await fx(cashier, rates={"BTC/EUR": "60000"})
        status, created = await btc_deposit(cashier, player, key=f"stale-pin-{player}")
        assert status == 201, created
        async with wallet_away(bridge.services.inbox, timeout_ms=500):
            await cashier.complete_deposit(created)

            async def tried() -> bool:
                return bool(await bridge_conn.fetchval(
                    "SELECT attempts > 0 FROM bridge.inbox WHERE payment_id = $1 AND "
                    "psp_event_type = 'finished'", created["id"]))
            await wait_for(tried)
            assert await pinned_rate(bridge_conn, created["id"]) == "60000"
            await fx(cashier, rates={"BTC/EUR": "61000"})
        done = await cashier.wait_state(created["id"], "succeeded")
        assert done["fx"]["credit"]["rate"] == "61000"
        assert done["fx"]["credit"]["credited_minor"] == 9012
        assert (await client.balance(player, "EUR")).cash == 9012
        assert await pinned_rate(bridge_conn, created["id"]) == "61000"


async def test_credit_refused_outright_drops_its_pin_and_a_replay_prices_afresh(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """1000 sat quoted at 60000; at credit time the rate is 0.000001 (worth nothing): dead
    at once, and the pin is gone with it. Support replays once rates are sane: credited at
    the fresh rate, not the pinned junk."""
    async with fx_bridge(make_bridge, cashier) as bridge:
        await fx(cashier, rates={"BTC/EUR": "60000"})
        status, created = await btc_deposit(cashier, player, key=f"junk-{player}", sats=1000)
        assert status == 201, created
        await fx(cashier, rates={"BTC/EUR": "0.000001"})
        await asyncio.sleep(AGE_MAX_MS / 1000 + 0.1)
        since = await last_inbox_id(bridge_conn)
        await cashier.complete_deposit(created)

        async def dead() -> bool:
            return bool(await dead_events(bridge_conn, since))
        await wait_for(dead)
        assert "not credited" in (await dead_events(bridge_conn, since))[0]
        assert await pinned_rate(bridge_conn, created["id"]) is None

        await fx(cashier, rates={"BTC/EUR": "60000"})
        await asyncio.sleep(AGE_MAX_MS / 1000 + 0.1)
        await bridge_conn.execute(  # what support's replay does (queries.REPLAY_DEAD)
            "UPDATE bridge.inbox SET status = 'pending', attempts = 0, processed_at = NULL, "
            "next_attempt_at = now() WHERE id > $1 AND status = 'dead'", since)
        bridge.services.inbox.wake()
        done = await cashier.wait_state(created["id"], "succeeded")
        # 0.00001 BTC x 60000 = 0.60 EUR, less 1.5 % = 0.591 -> 59 cents
        assert done["fx"]["credit"]["credited_minor"] == 59
        assert (await client.balance(player, "EUR")).cash == 59


async def test_slow_rates_provider_holds_no_second_connection(
        make_bridge: BridgeFactory, cashier: Cashier, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """While an inbox worker waits 3 s for the rates provider, it holds only its own pool
    connection (the pin is looked up on it, and written after the answer)."""
    async with fx_bridge(make_bridge, cashier, workers=False,
                         env={"BRIDGE_FX_TIMEOUT_MS": str(SLOW_FX_TIMEOUT_MS)}) as bridge:
        await fx(cashier, rates={"BTC/EUR": "60000"})
        status, created = await btc_deposit(cashier, player, key=f"slow-{player}")
        assert status == 201, created
        await cashier.complete_deposit(created)
        await cashier.flush()

        async def stored() -> bool:
            return bool(await bridge_conn.fetchval(
                "SELECT count(*) FROM bridge.inbox WHERE payment_id = $1 AND "
                "psp_event_type = 'finished'", created["id"]))
        await wait_for(stored)
        await fx(cashier, latency_ms=SLOW_FX_LATENCY_MS)
        await asyncio.sleep(AGE_MAX_MS / 1000 + 0.1)  # the cached table ages out
        pool = bridge.pool

        def in_use() -> int:
            return int(pool.get_size() - pool.get_idle_size())

        applying = asyncio.create_task(bridge.services.inbox.drain())

        async def claimed() -> bool:
            return in_use() >= 1
        await wait_for(claimed)
        # From the claim on the worker holds its connection; the provider answers no sooner
        # than SLOW_FX_LATENCY_MS later, so every sample below falls before the pin's write.
        loop = asyncio.get_running_loop()
        sampling_ends_s = loop.time() + SLOW_FX_SAMPLING_MS / 1000
        samples: list[int] = []
        while loop.time() < sampling_ends_s:
            samples.append(in_use())
            await asyncio.sleep(0.03)
        await applying
        assert set(samples) == {1}, samples
        assert (await cashier.payment(created["id"]))["state"] == "succeeded"


async def test_credit_above_the_wallet_currency_cap_is_refused_before_the_psp(
        make_bridge: BridgeFactory, cashier: Cashier, bridge_conn: asyncpg.Connection,
        player: str) -> None:
    """20,000 BTC at 60000 less 1.5 % is 1,182,000,000.00 EUR, above the wallet's EUR cap
    of 1,000,000,000.00: 422 FX_AMOUNT_TOO_LARGE on amount_minor, nothing stored."""
    async with fx_bridge(make_bridge, cashier):
        await fx(cashier, rates={"BTC/EUR": "60000"})
        status, body = await btc_deposit(cashier, player, key=f"cap-{player}",
                                         sats=20_000 * 10**8)
        assert (status, body["error"]["code"], body["error"]["field"]) == (
            422, "FX_AMOUNT_TOO_LARGE", "amount_minor"), body
        assert await stored_payments(bridge_conn, f"cap-{player}") == 0


@pytest.fixture(autouse=True)
async def _fx_knobs_reset(cashier: Cashier) -> AsyncIterator[None]:
    yield
    await cashier.sim("/_sim/fx", {"reset": True})
