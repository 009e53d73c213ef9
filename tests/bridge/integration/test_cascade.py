"""Cascades of stored-card deposits through the real bridge, wallet and simulator
(docs/ROUTING.md, "Cascades"): a soft decline moves the payment to the next PSP with a fresh
idempotency key and one credit; a hard decline never moves it; a PSP that answers too late
captures for a payment that left it, and the bridge refunds it there, flagged, with the
wallet credited once."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
import pytest

from gateway_bridge.shared.events import EventKind, PspEvent
from tests.bridge.clis import walletctl
from tests.bridge.conftest import BridgeFactory, Cashier
from tests.bridge.integration.test_routing import method, prefer, probed_up, rules_env
from tests.helpers import Client, wait_for

TOKEN = "pm_card_visa_4242_test"


async def charge(cashier: Cashier, player: str, card: str, *, key: str,
                 **extra: Any) -> tuple[int, dict[str, Any]]:
    return await cashier.request("POST", "/v1/deposits", body={
        "player_id": player, "amount_minor": 40_00, "currency": "USD", "method": card,
        "payment_token": TOKEN, **extra}, headers={"Idempotency-Key": key})


async def charge_keys(cashier: Cashier, psp: str) -> list[str]:
    """The idempotency keys of the charges `psp` received, oldest first."""
    path = "/v1/payment_intents" if psp == "stripe" else "/v71/payments"
    requests = (await cashier.sim_get(f"/_sim/requests?psp={psp}&limit=10000"))["requests"]
    return [r["idempotency_key"] for r in requests if r["path"].endswith(path)]


async def test_a_soft_decline_cascades_to_the_next_psp_and_credits_once(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    card = method()
    await prefer(bridge_conn, "stripe", card)
    async with make_bridge(**rules_env(card, ["stripe", "adyen"])):
        await cashier.knobs(decline_code_by_psp={"stripe": "do_not_honor"})
        status, created = await charge(cashier, player, card, key=f"soft-{card}")
        assert status == 201, created
        assert created["psp"] == "adyen", created
        assert created["routing"]["order"][0] == "stripe"
        assert created["routing"]["attempts"] == [
            {"psp": "stripe", "outcome": "soft decline do_not_honor"}]
        done = await cashier.wait_state(created["id"], "succeeded")
        assert done["settled_minor"] == 40_00 and "refusal" not in done
        # A retry is the same payment: nothing charged again, nothing credited again.
        status, again = await charge(cashier, player, card, key=f"soft-{card}")
        assert (status, again["id"], again["state"]) == (200, created["id"], "succeeded")
        await cashier.flush()
        assert (await client.balance(player)).cash == 40_00
        # One id, two attempts, each with a key of its own at its PSP.
        assert f"charge-{created['id']}-1" in await charge_keys(cashier, "stripe")
        assert f"charge-{created['id']}-2" in await charge_keys(cashier, "adyen")
        failures = await bridge_conn.fetchval(
            "SELECT failures FROM bridge.routing_tallies WHERE psp = 'stripe' AND method = $1",
            card)
        assert failures >= 1, "the decline taught the router"


async def test_a_hard_decline_never_cascades(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    card = method()
    await prefer(bridge_conn, "stripe", card)
    async with make_bridge(**rules_env(card, ["stripe", "adyen"])):
        await cashier.knobs(decline_code_by_psp={"stripe": "stolen_card"})
        status, created = await charge(cashier, player, card, key=f"hard-{card}")
        assert status == 201, created
        assert (created["psp"], created["state"]) == ("stripe", "failed"), created
        assert created["refusal"]["reason"] == "PAYMENT_DECLINED"
        assert "hard decline stolen_card" in created["refusal"]["message"]
        assert "attempts" not in created["routing"]
        assert not any(k.startswith(f"charge-{created['id']}")
                       for k in await charge_keys(cashier, "adyen")), "adyen never asked"
        await cashier.flush()
        assert (await client.balance(player)).cash == 0


async def test_a_soft_decline_with_no_attempt_left_fails_the_payment(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """BRIDGE_ROUTING_ATTEMPTS_MAX bounds the cascade: with 1, a soft decline is final."""
    card = method()
    await prefer(bridge_conn, "adyen", card)
    async with make_bridge(BRIDGE_ROUTING_ATTEMPTS_MAX="1",
                           **rules_env(card, ["adyen", "stripe"])):
        await cashier.knobs(decline_code_by_psp={"adyen": "9"})
        status, created = await charge(cashier, player, card, key=f"cap-{card}")
        assert status == 201, created
        assert (created["psp"], created["state"]) == ("adyen", "failed"), created
        assert "soft decline 9" in created["refusal"]["message"]
        history = [h["note"] for h in (await cashier.payment(created["id"]))["history"]]
        assert any("no PSP left to try" in n for n in history), history
        assert (await client.balance(player)).cash == 0


async def test_a_late_capture_at_an_abandoned_psp_is_refunded_there_and_flagged(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """stripe charges the card but answers after the bridge gave up on it: the deposit
    cascades to adyen, which credits it. stripe's webhook comes later still: the capture is
    never credited, and the bridge refunds it at stripe."""
    card = method()
    await prefer(bridge_conn, "stripe", card)
    started = await bridge_conn.fetchval("SELECT now()")
    async with make_bridge(BRIDGE_PSP_TIMEOUT_MS="300", BRIDGE_PSP_RETRIES_MAX="0",
                           **rules_env(card, ["stripe", "adyen"])) as run:
        await wait_for(lambda: probed_up(bridge_conn, "stripe", started))
        await cashier.knobs(latency_ms_by_psp={"stripe": 1_000}, delay_ms=1_500)
        try:
            status, created = await charge(cashier, player, card, key=f"late-{card}")
        finally:
            await cashier.knobs(latency_ms_by_psp={})
        assert status == 201, created
        assert created["psp"] == "adyen", created
        assert created["routing"]["attempts"] == [{"psp": "stripe", "outcome": "unavailable"}]
        await cashier.wait_state(created["id"], "succeeded")
        await cashier.flush()  # stripe's (and adyen's) delayed webhooks

        refunded: dict[str, Any] = {}

        async def refunded_at_stripe() -> bool:
            nonlocal refunded
            refunded = await cashier.payment(created["id"])
            return bool(refunded.get("refunds")) and refunded["refunds"][0]["state"] != "owed"
        await wait_for(refunded_at_stripe, timeout_s=15)
        [refund] = refunded["refunds"]
        assert (refund["psp"], refund["state"], refund["amount_minor"]) == (
            "stripe", "refunded", 40_00), refund
        assert refund["psp_reference"].startswith("pi_")
        sim_object = await cashier.sim_get(f"/_sim/objects/stripe/{refund['psp_reference']}")
        assert (sim_object["payment_id"], sim_object["status"]) == (created["id"], "refunded")
        notes = [h["note"] for h in refunded["history"]]
        assert any("refund owed at stripe" in n for n in notes), notes
        assert any(n.startswith("refunded at stripe as re_") for n in notes), notes
        assert refunded["attention"] is None, "nothing left for support"
        assert refunded["settled_minor"] == 40_00
        # The same capture reported again (a poll, a redelivery under a new id): not owed
        # twice, and the payment is not flagged again.
        [again] = await run.services.inbox.store([PspEvent(
            psp="stripe", event_key=f"again-{card}", kind=EventKind.DEPOSIT_SUCCEEDED,
            psp_event_type="payment_intent.succeeded", payment_id=created["id"],
            psp_reference=refund["psp_reference"], amount_minor=40_00, currency="USD")],
            source="webhook")
        assert again is not None
        await run.services.inbox.drain()
        final = await cashier.payment(created["id"])
        assert final["attention"] is None and len(final["refunds"]) == 1, final
        assert (await client.balance(player)).cash == 40_00, "credited once, by adyen"


async def test_a_refund_the_psp_refuses_is_left_to_support_by_name(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, bridge_db: str, ledger_clean: None) -> None:
    """adyen softly declines, stripe credits; then adyen reports a capture it can't refund
    (a reference it doesn't know): the refund fails, the payment says what to do, and
    `walletctl refunds` lists it and records the refund support made by hand."""
    card = method()
    await prefer(bridge_conn, "adyen", card)
    async with make_bridge(**rules_env(card, ["adyen", "stripe"])) as run:
        await cashier.knobs(decline_code_by_psp={"adyen": "9"})
        status, created = await charge(cashier, player, card, key=f"refuse-{card}")
        assert status == 201 and created["psp"] == "stripe", created
        await cashier.wait_state(created["id"], "succeeded")
        [stored] = await run.services.inbox.store([PspEvent(
            psp="adyen", event_key=f"ghost-{card}", kind=EventKind.DEPOSIT_SUCCEEDED,
            psp_event_type="AUTHORISATION", payment_id=created["id"],
            psp_reference="8816000000000001", amount_minor=40_00, currency="USD")],
            source="webhook")
        assert stored is not None

        async def settled() -> bool:
            p = await cashier.payment(created["id"])
            return bool(p.get("refunds")) and p["refunds"][0]["state"] != "owed"
        await wait_for(settled, timeout_s=15)
        failed = await cashier.payment(created["id"])
        [refund] = failed["refunds"]
        assert (refund["psp"], refund["state"]) == ("adyen", "failed"), refund
        assert "refused the refund" in refund["last_error"]
        assert failed["attention"].startswith("refund failed at adyen: "), failed["attention"]
        assert "refund 8816000000000001 by hand" in failed["attention"]
        assert (await client.balance(player)).cash == 40_00, "credited once, by stripe"

        env = {"DATABASE_URL": bridge_db}
        listed = await asyncio.to_thread(walletctl, env, "refunds", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        [row] = [r for r in orjson.loads(listed.stdout) if r["payment_id"] == created["id"]]
        assert (row["psp"], row["state"]) == ("adyen", "failed")
        missing = await asyncio.to_thread(walletctl, env, "refunds", "done", "--id", str(row["id"]))
        assert missing.returncode == 2 and "--reason" in missing.stderr
        done = await asyncio.to_thread(walletctl, env, "refunds", "done", "--id", str(row["id"]),
                                       "--reference", "8816000000009999", "--reason",
                                       "refunded in the Customer Area", "--actor", "ana")
        assert done.returncode == 0, done.stderr
        by_hand = await cashier.payment(created["id"])
        assert by_hand["attention"] is None
        assert by_hand["refunds"][0]["state"] == "refunded"
        assert by_hand["refunds"][0]["refund_reference"] == "8816000000009999"
        assert any("refunded by hand at adyen as 8816000000009999 by ana" in h["note"]
                   for h in by_hand["history"])
        again = await asyncio.to_thread(walletctl, env, "refunds", "retry", "--id", str(row["id"]),
                                        "--reason", "twice")
        assert again.returncode == 1, "only a failed refund can be retried"


@pytest.mark.parametrize("refund_fails", [False, True], ids=["settled", "failed"])
async def test_an_adyen_refund_is_settled_by_its_notification(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None, refund_fails: bool) -> None:
    """Adyen only accepts a refund ("received"): it stays `requested` until the REFUND
    notification says it went through, or that it failed (then support is told)."""
    card = method()
    await prefer(bridge_conn, "adyen", card)
    started = await bridge_conn.fetchval("SELECT now()")
    async with make_bridge(BRIDGE_PSP_TIMEOUT_MS="300", BRIDGE_PSP_RETRIES_MAX="0",
                           **rules_env(card, ["adyen", "stripe"])):
        await wait_for(lambda: probed_up(bridge_conn, "adyen", started))
        await cashier.knobs(latency_ms_by_psp={"adyen": 1_000}, delay_ms=1_000,
                            refund_fail_psps=["adyen"] if refund_fails else [])
        try:
            status, created = await charge(cashier, player, card, key=f"ady-{card}")
        finally:
            await cashier.knobs(latency_ms_by_psp={})
        assert status == 201 and created["psp"] == "stripe", created
        await cashier.wait_state(created["id"], "succeeded")

        seen: dict[str, Any] = {}

        async def settled() -> bool:
            nonlocal seen
            seen = await cashier.payment(created["id"])
            return bool(seen.get("refunds")) and seen["refunds"][0]["state"] in (
                "refunded", "failed")
        await wait_for(settled, timeout_s=20)
        [refund] = seen["refunds"]
        notes = [h["note"] for h in seen["history"]]
        assert any(n.startswith("refund requested at adyen as ") for n in notes), notes
        if refund_fails:
            assert refund["state"] == "failed", refund
            assert seen["attention"].startswith("refund failed at adyen: adyen reports the "
                                                "refund failed (REFUND)"), seen["attention"]
        else:
            assert refund["state"] == "refunded", refund
            assert seen["attention"] is None
            sim_object = await cashier.sim_get(f"/_sim/objects/adyen/{refund['psp_reference']}")
            assert sim_object["status"] == "refunded"
        assert (await client.balance(player)).cash == 40_00, "credited once, by stripe"


async def test_a_retry_racing_a_slow_charge_waits_instead_of_charging_elsewhere(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """The cashier retries while stripe is still working on the charge: stripe answers the
    retry 409 (the key is in progress), and the retry must wait for that outcome, not
    cascade the card to adyen."""
    card = method()
    await prefer(bridge_conn, "stripe", card)
    async with make_bridge(**rules_env(card, ["stripe", "adyen"])):
        await cashier.knobs(work_ms_by_psp={"stripe": 1500})
        first = asyncio.create_task(charge(cashier, player, card, key=f"race-{card}"))

        async def stored() -> bool:
            return bool(await bridge_conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM bridge.payments WHERE client_key = $1)",
                f"race-{card}"))
        await wait_for(stored)  # the first request created the payment: the retry is a retry
        await asyncio.sleep(0.2)  # and its charge reached stripe, which works for 1.5 s
        second = await charge(cashier, player, card, key=f"race-{card}")
        status, created = await first
        assert status == 201 and created["psp"] == "stripe", created
        assert second[0] in (200, 503), second
        if second[0] == 503:
            assert second[1]["error"]["code"] == "PSP_UNAVAILABLE"
        await cashier.knobs(work_ms_by_psp={})
        status, again = await charge(cashier, player, card, key=f"race-{card}")
        assert (status, again["id"], again["psp"]) == (200, created["id"], "stripe"), again
        assert "attempts" not in again["routing"]
        assert not any(k.startswith(f"charge-{created['id']}")
                       for k in await charge_keys(cashier, "adyen")), "adyen never charged"
        await cashier.wait_state(created["id"], "succeeded")
        assert (await client.balance(player)).cash == 40_00


async def test_a_card_number_is_never_taken_as_a_token(
        make_bridge: BridgeFactory, cashier: Cashier, player: str) -> None:
    card = method()
    async with make_bridge(**rules_env(card, ["stripe"])):
        status, body = await cashier.request("POST", "/v1/deposits", body={
            "player_id": player, "amount_minor": 40_00, "currency": "USD", "method": card,
            "payment_token": "4111111111111111"}, headers={"Idempotency-Key": f"pan-{card}"})
        assert (status, body["error"]["field"]) == (400, "payment_token"), body
        assert "4111" not in body["error"]["message"]
        status, body = await charge(cashier, player, card, key=f"np-{card}",
                                    psp="nowpayments", pay_currency="btc")
        assert status in (400, 422) and body["error"]["field"] in ("payment_token", "psp"), body
