"""PSP routing through the real bridge, wallet and simulator (docs/ROUTING.md): unpinned
deposits are routed and say why, a PSP that is down hands the deposit to the next one with
one credit, an answer from the abandoned PSP is flagged and never credited, refusals come
before anything is stored, and replicas share what they learn."""

from __future__ import annotations

import random
import uuid
from typing import Any

import asyncpg
import orjson

from gateway_bridge.routing import settings as routing_settings
from gateway_bridge.routing.learning import Health
from gateway_bridge.routing.rules import RouteRequest
from gateway_bridge.routing.service import Router
from gateway_bridge.shared.events import EventKind, PspEvent
from gateway_bridge.shared.terms import Direction
from service_kit.pg import init_json_codecs
from service_kit.settings import EnvReader
from tests.bridge.conftest import BridgeFactory, Cashier
from tests.helpers import Client, wait_for


def method() -> str:
    """A payment method of this test's own, so the shared evidence table is its alone."""
    return f"card_{uuid.uuid4().hex[:8]}"


def rules_env(card: str, psps: list[Any]) -> dict[str, str]:
    return {"BRIDGE_ROUTING_RULES": orjson.dumps([
        {"name": "cards", "methods": [card], "currencies": ["USD"], "psps": psps}]).decode()}


async def deposit(cashier: Cashier, player: str, card: str, *, key: str,
                  **extra: Any) -> tuple[int, dict[str, Any]]:
    return await cashier.request("POST", "/v1/deposits", body={
        "player_id": player, "amount_minor": 25_00, "currency": "USD", "method": card,
        **extra}, headers={"Idempotency-Key": key})


async def prefer(conn: asyncpg.Connection, psp: str, card: str) -> None:
    """Evidence that `psp` succeeds, recorded as the bridge records it. So much that the
    router's random draw puts another PSP with no evidence first about once in 10^9 (with 500
    it did once in about 500: one CI run in fifty across the tests that use this)."""
    await conn.execute(
        "INSERT INTO bridge.routing_tallies (psp, method, currency, successes, failures) "
        "VALUES ($1, $2, 'USD', 1e9, 0) ON CONFLICT (psp, method, currency) DO UPDATE "
        "SET successes = 1e9, failures = 0, at = now()", psp, card)


async def probed_up(conn: asyncpg.Connection, psp: str, since: Any) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM bridge.psp_probes WHERE psp = $1 AND up "
        "AND checked_at >= $2)", psp, since))


async def test_an_unpinned_deposit_is_routed_credited_once_and_teaches_the_router(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    card = method()
    async with make_bridge(**rules_env(card, ["adyen", {"psp": "stripe", "weight": 2}])):
        status, created = await deposit(cashier, player, card, key=f"r-{card}")
        assert status == 201, created
        assert created["psp"] in ("adyen", "stripe")
        routing = created["routing"]
        assert routing["rule"] == "cards" and routing["pinned"] is False
        assert sorted(routing["order"]) == ["adyen", "stripe"]
        assert any(created["psp"] in r for r in routing["reasons"])
        # A retry without a PSP names the same request: the same payment, not a new route.
        status, again = await deposit(cashier, player, card, key=f"r-{card}")
        assert (status, again["id"], again["psp"]) == (200, created["id"], created["psp"])
        await cashier.complete_deposit(created)
        await cashier.wait_state(created["id"], "succeeded")
        assert (await client.balance(player)).cash == 25_00
        learned = await bridge_conn.fetchrow(
            "SELECT successes, failures FROM bridge.routing_tallies WHERE psp = $1 AND "
            "method = $2", created["psp"], card)
        assert learned is not None and (learned["successes"], learned["failures"]) == (1, 0)


async def test_a_psp_that_is_down_hands_the_deposit_to_the_next_with_one_credit(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    card = method()
    await prefer(bridge_conn, "adyen", card)
    started = await bridge_conn.fetchval("SELECT now()")
    async with make_bridge(**rules_env(card, ["adyen", "stripe"])) as run:
        # The first health probe runs as the bridge starts; it must see adyen up, or routing
        # would drop adyen for the probe and never try it (a path of its own, tested below).
        await wait_for(lambda: probed_up(bridge_conn, "adyen", started))
        await cashier.knobs(down_psps=["adyen"])
        try:
            status, created = await deposit(cashier, player, card, key=f"down-{card}")
        finally:
            await cashier.knobs(down_psps=[])
        assert status == 201, created
        assert created["psp"] == "stripe" and created["state"] == "pending"
        assert created["routing"]["order"][0] == "adyen"
        assert created["routing"]["attempts"] == [{"psp": "adyen", "outcome": "unavailable"}]
        failed = await bridge_conn.fetchval(
            "SELECT failures FROM bridge.routing_tallies WHERE psp = 'adyen' AND method = $1",
            card)
        assert failed >= 1
        # The abandoned PSP answers after all: flagged for a refund there, never credited.
        [stored] = await run.services.inbox.store([PspEvent(
            psp="adyen", event_key=f"late-{card}", kind=EventKind.DEPOSIT_SUCCEEDED,
            psp_event_type="AUTHORISATION", payment_id=created["id"], amount_minor=25_00,
            currency="USD")], source="webhook")
        assert stored is not None

        async def handled() -> bool:  # by a worker of the running bridge, or by this drain
            await run.services.inbox.drain()
            return bool(await bridge_conn.fetchval(
                "SELECT status <> 'pending' FROM bridge.inbox WHERE id = $1", stored))
        await wait_for(handled)
        flagged = await cashier.payment(created["id"])
        assert flagged["state"] == "pending" and flagged["settled_minor"] == 0
        assert flagged["attention"].startswith("refund owed at adyen: it captured")
        await cashier.complete_deposit(created)
        done = await cashier.wait_state(created["id"], "succeeded")
        assert (await client.balance(player)).cash == 25_00, "credited once, by stripe"
        assert done["attention"] == flagged["attention"], "the refund stays owed"
        history = [h["note"] for h in (await cashier.payment(created["id"]))["history"]]
        assert any("cascaded from adyen (unavailable) to stripe" in n for n in history)


async def test_a_payment_no_rule_allows_is_refused_before_anything_is_stored(
        make_bridge: BridgeFactory, cashier: Cashier, player: str,
        bridge_conn: asyncpg.Connection) -> None:
    card = method()
    async with make_bridge(**rules_env(card, ["stripe"])):
        status, body = await deposit(cashier, player, "bank_transfer", key=f"none-{card}")
        assert (status, body["error"]["code"]) == (422, "ROUTE_NOT_FOUND"), body
        assert "no routing rule covers a deposit bank_transfer USD" in body["error"]["message"]
        status, body = await deposit(cashier, player, card, key=f"pin-{card}", psp="adyen")
        assert (status, body["error"]["code"], body["error"]["field"]) == (
            422, "ROUTE_NOT_FOUND", "psp"), body
        stored = await bridge_conn.fetchval(
            "SELECT count(*) FROM bridge.payments WHERE client_key IN ($1, $2)",
            f"none-{card}", f"pin-{card}")
        assert stored == 0
        status, pinned = await deposit(cashier, player, card, key=f"ok-{card}", psp="stripe")
        assert status == 201 and pinned["routing"]["pinned"] is True


async def test_two_replicas_learn_the_same_rates(bridge_db: str) -> None:
    """What one bridge learns, another routes by: the evidence lives in Postgres."""
    card = method()
    env = rules_env(card, ["adyen", "stripe"])
    reader = EnvReader(env)
    settings = routing_settings.load(env, reader, psp_names=["adyen", "stripe"])
    reader.done()
    pools = [await asyncpg.create_pool(bridge_db, min_size=1, max_size=2,
                                       init=init_json_codecs) for _ in range(2)]
    try:
        one, two = (Router(pool=p, settings=settings, health=lambda _: Health(),
                           acquire_timeout_ms=2000, rng=random.Random(n))
                    for n, p in enumerate(pools))
        async with pools[0].acquire() as conn:
            for _ in range(60):
                await one.record(conn, psp="adyen", method=card, currency="USD", success=False)
                await one.record(conn, psp="stripe", method=card, currency="USD", success=True)
        request = RouteRequest(direction=Direction.DEPOSIT, method=card, currency="USD",
                               amount_minor=10_00)
        decisions = [await two.decide(request) for _ in range(40)]
        for decision in decisions:
            assert any("adyen: out (success rate" in r for r in decision.reasons), decision
            # adyen goes first only as the trickle that would notice its recovery.
            assert decision.order[0] == "stripe" or any("trickle" in r
                                                        for r in decision.reasons), decision
        assert sum(d.order[0] == "stripe" for d in decisions) >= 30
    finally:
        for p in pools:
            await p.close()



async def test_a_payout_goes_back_to_the_psp_the_player_deposited_with(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """Closed loop: the router would prefer adyen, but the money came through stripe."""
    card = method()
    await prefer(bridge_conn, "adyen", card)
    rules = orjson.dumps([
        {"name": "cards", "methods": [card], "psps": ["adyen", "stripe"]},
        {"name": "payouts", "direction": "withdrawal", "psps": ["adyen", "stripe"]}]).decode()
    await prefer(bridge_conn, "adyen", "bank_transfer")
    async with make_bridge(BRIDGE_ROUTING_RULES=rules):
        status, dep = await deposit(cashier, player, card, key=f"cl-{card}", psp="stripe")
        assert status == 201, dep
        await cashier.complete_deposit(dep)
        await cashier.wait_state(dep["id"], "succeeded")
        status, wd = await cashier.request("POST", "/v1/withdrawals", body={
            "player_id": player, "amount_minor": 10_00, "currency": "USD",
            "method": "bank_transfer", "destination": "acct_test_123"},
            headers={"Idempotency-Key": f"clw-{card}"})
        assert status == 202, wd
        assert wd["psp"] == "stripe"
        assert any("closed loop" in r for r in wd["routing"]["reasons"]), wd["routing"]
        assert (await client.balance(player)).reserved == 10_00


async def test_the_router_moves_deposits_off_a_psp_that_declines(
        make_bridge: BridgeFactory, cashier: Cashier, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """Through the simulator: adyen declines nine deposits in ten, stripe none. Routing starts
    with no evidence and learns from the outcomes the inbox applies."""
    card = method()
    async with make_bridge(**rules_env(card, ["adyen", "stripe"])):
        await cashier.knobs(auto_complete_ms=5, decline_rate_by_psp={"adyen": 0.9})
        try:
            picks = []
            for n in range(40):
                status, p = await deposit(cashier, player, card, key=f"learn-{card}-{n}")
                assert status == 201, p
                picks.append(p["psp"])
                await cashier.flush()
                final = await _settled(cashier, p["id"])
                assert final in ("succeeded", "failed"), final
        finally:
            await cashier.knobs(auto_complete_ms=0, decline_rate_by_psp={})
        assert picks[-15:].count("stripe") >= 12, picks
        tallies = {r["psp"]: (r["successes"], r["failures"]) for r in await bridge_conn.fetch(
            "SELECT psp, successes, failures FROM bridge.routing_tallies WHERE method = $1",
            card)}
        assert tallies["stripe"][0] > 0 and tallies["adyen"][1] > 0, tallies


async def _settled(cashier: Cashier, payment_id: str) -> str:
    state = ""

    async def final() -> bool:
        nonlocal state
        state = (await cashier.payment(payment_id))["state"]
        return state in ("succeeded", "failed")
    await wait_for(final)
    return state


async def test_knob_schedule_changes_the_market_over_time(cashier: Cashier) -> None:
    """The simulator applies scheduled knob changes in order; a bad step refuses it all."""
    try:
        await cashier.sim("/_sim/schedule", {"steps": [
            {"after_ms": 0, "knobs": {"decline_rate_by_psp": {"adyen": 0.6}}},
            {"after_ms": 2000, "knobs": {"decline_rate_by_psp": {}, "down_psps": ["stripe"]}}]})

        async def knobs() -> dict[str, Any]:
            async with cashier.http.get(cashier.sim_url + "/_sim/knobs") as r:
                return dict(await r.json())
        await wait_for(lambda: _has(knobs, "decline_rate_by_psp", {"adyen": 0.6}))
        assert (await knobs())["down_psps"] == []
        await wait_for(lambda: _has(knobs, "down_psps", ["stripe"]))
        assert (await knobs())["decline_rate_by_psp"] == {}
        async with cashier.http.post(cashier.sim_url + "/_sim/schedule", json={"steps": [
                {"after_ms": 0, "knobs": {"down_psps": ["paypal"]}}]}) as r:
            assert r.status == 400 and "steps[0].knobs: down_psps" in (await r.json())["error"]
    finally:
        # A new schedule replaces this one. Not /_sim/reset: it would also forget the
        # simulator's payments, which other tests' bridges still poll.
        await cashier.sim("/_sim/schedule", {"steps": [
            {"after_ms": 0, "knobs": {"decline_rate_by_psp": {}, "down_psps": []}}]})


async def _has(knobs: Any, name: str, value: Any) -> bool:
    return bool((await knobs())[name] == value)


async def test_a_retry_keeps_its_payment_whatever_the_rules_say_since(
        make_bridge: BridgeFactory, cashier: Cashier, player: str) -> None:
    card = method()
    async with make_bridge(**rules_env(card, ["adyen", "stripe"])):
        status, first = await deposit(cashier, player, card, key=f"keep-{card}")
        assert status == 201, first
    other = method()  # the rules changed: nothing covers `card` any more
    async with make_bridge(**rules_env(other, ["stripe"])):
        status, again = await deposit(cashier, player, card, key=f"keep-{card}")
        assert (status, again["id"], again["psp"]) == (200, first["id"], first["psp"]), again


async def test_a_psp_that_cannot_take_the_request_is_not_a_candidate(
        make_bridge: BridgeFactory, cashier: Cashier, player: str) -> None:
    """NOWPayments needs the asset the player pays in: without one it is skipped."""
    coins = f"crypto_{uuid.uuid4().hex[:6]}"
    async with make_bridge(**rules_env(coins, ["nowpayments", "stripe"])):
        for n in range(5):
            status, p = await deposit(cashier, player, coins, key=f"coin-{coins}-{n}")
            assert status == 201 and p["psp"] == "stripe", p
    async with make_bridge(**rules_env(coins, ["nowpayments"])):
        status, body = await deposit(cashier, player, coins, key=f"coin-none-{coins}")
        assert (status, body["error"]["code"], body["error"]["field"]) == (
            422, "ROUTE_NOT_FOUND", "pay_currency"), body
