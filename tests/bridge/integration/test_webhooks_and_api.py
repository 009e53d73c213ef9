"""The bridge's HTTP edge under hostile or sloppy input: forged, stale, altered, truncated,
oversized and unknown webhooks, concurrent duplicates, and malformed cashier requests. Each
gets the right 4xx (or is recorded and ignored) and nothing is credited."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import orjson
import pytest

from gateway_bridge.http.webhooks import flush_rejections
from gateway_bridge.psp.stripe import sign_header
from gateway_bridge.server import Running as BridgeRunning
from tests.bridge.conftest import PSP_ENV, Cashier
from tests.helpers import Client

SECRET = PSP_ENV["BRIDGE_STRIPE_WEBHOOK_SECRET"]


def session_completed(payment: dict[str, Any], *, event_id: str, amount: int | None = None,
                      event_type: str = "checkout.session.completed") -> bytes:
    return orjson.dumps({
        "id": event_id, "object": "event", "type": event_type, "created": int(time.time()),
        "data": {"object": {
            "id": payment["psp_reference"], "object": "checkout.session",
            "payment_status": "paid", "status": "complete",
            "amount_total": payment["amount_minor"] if amount is None else amount,
            "currency": payment["currency"].lower(), "payment_intent": "pi_" + event_id,
            "client_reference_id": payment["id"], "metadata": {"payment_id": payment["id"]}}},
    })


async def post_stripe(cashier: Cashier, body: bytes, *, signature: str | None = None,
                      content_type: str = "application/json") -> tuple[int, Any]:
    headers = {"Content-Type": content_type}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    async with cashier.http.post(f"{cashier.url}/webhooks/stripe", data=body,
                                 headers=headers) as r:
        return r.status, await r.read()


async def rejections(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT cause, count FROM bridge.webhook_rejections "
                            "WHERE psp = 'stripe'")
    return {r["cause"]: r["count"] for r in rows}


def dispute_created(payment_intent: str, *, event_id: str, amount: int) -> bytes:
    return orjson.dumps({
        "id": event_id, "object": "event", "type": "charge.dispute.created",
        "created": int(time.time()),
        "data": {"object": {"id": "dp_" + event_id, "object": "dispute", "amount": amount,
                            "currency": "usd", "payment_intent": payment_intent,
                            "reason": "fraudulent", "status": "needs_response",
                            "metadata": {}}},
    })


async def test_dispute_before_the_capture_waits_then_is_applied_once(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """Stripe's dispute (known only by payment_intent) arrives before the capture that teaches
    us that reference: it waits in the inbox, then debits once after the credit."""
    created = await cashier.deposit(player, 50_00)
    capture = session_completed(created, event_id=f"evt_cap_{created['id']}")
    payment_intent = orjson.loads(capture)["data"]["object"]["payment_intent"]
    dispute = dispute_created(payment_intent, event_id=f"evt_dsp_{created['id']}",
                              amount=80_00)
    status, _ = await post_stripe(cashier, dispute,
                                  signature=sign_header(SECRET, int(time.time()), dispute))
    assert status == 200

    async def waiting() -> bool:
        row = await bridge_conn.fetchrow("SELECT status, attempts, last_error FROM bridge.inbox"
                                         " WHERE event_key = $1", f"evt_dsp_{created['id']}")
        return row is not None and row["attempts"] >= 1 and row["status"] == "pending"
    async with asyncio.timeout(10):
        while not await waiting():
            await asyncio.sleep(0.05)
    assert (await client.balance(player)).cash == 0
    status, _ = await post_stripe(cashier, capture,
                                  signature=sign_header(SECRET, int(time.time()), capture))
    assert status == 200
    done = await cashier.wait_state(created["id"], "charged_back")
    # The dispute asked for 80.00 on a 50.00 deposit: capped at what was credited.
    assert (done["settled_minor"], done["charged_back_minor"]) == (50_00, 50_00)
    assert (await client.balance(player)).cash == 0


async def test_same_webhook_20_times_concurrently_is_one_deposit(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """20 concurrent deliveries of one signed event: all 2xx, one inbox row, one credit."""
    created = await cashier.deposit(player, 15_00)
    body = session_completed(created, event_id=f"evt_dup_{created['id']}")
    header = sign_header(SECRET, int(time.time()), body)
    answers = await asyncio.gather(*(post_stripe(cashier, body, signature=header)
                                     for _ in range(20)))
    assert {status for status, _ in answers} == {200}
    await cashier.wait_state(created["id"], "succeeded")
    assert await bridge_conn.fetchval("SELECT count(*) FROM bridge.inbox WHERE payment_id = $1",
                                      created["id"]) == 1
    assert (await client.balance(player)).cash == 15_00


@pytest.mark.parametrize(("case", "status", "cause"), [
    ("unsigned", 401, "unsigned"),
    ("forged", 401, "signature"),
    ("wrong_secret", 401, "signature"),
    ("stale", 401, "stale"),
    ("altered", 401, "signature"),
    ("truncated", 400, "malformed"),
    ("garbage_header", 400, "malformed"),
])
async def test_bad_webhooks_are_refused_counted_and_change_nothing(
        case: str, status: int, cause: str, bridge: BridgeRunning, cashier: Cashier,
        client: Client, player: str, bridge_conn: asyncpg.Connection) -> None:
    """Forged, stale, altered, unsigned or malformed: 4xx, counted by cause, nothing stored."""
    created = await cashier.deposit(player, 20_00)
    body = session_completed(created, event_id=f"evt_{case}_{created['id']}")
    now = int(time.time())
    signature: str | None = sign_header(SECRET, now, body)
    sent = body
    if case == "unsigned":
        signature = None
    elif case == "forged":
        signature = f"t={now},v1={'0' * 64}"
    elif case == "wrong_secret":
        signature = sign_header("whsec_not_the_secret", now, body)
    elif case == "stale":
        signature = sign_header(SECRET, now - 301, body)
    elif case == "altered":
        sent = body.replace(b'"amount_total":2000', b'"amount_total":2000000')
        assert sent != body
    elif case == "truncated":
        sent = body[: len(body) // 2]
        signature = sign_header(SECRET, now, sent)
    elif case == "garbage_header":
        signature = "this is not a stripe signature"
    before = (await rejections(bridge_conn)).get(cause, 0)
    got, answer = await post_stripe(cashier, sent, signature=signature)
    assert got == status, answer
    await flush_rejections(bridge.services)
    assert (await rejections(bridge_conn)).get(cause, 0) == before + 1
    assert await bridge_conn.fetchval("SELECT count(*) FROM bridge.inbox WHERE payment_id = $1",
                                      created["id"]) == 0
    assert SECRET.encode() not in answer
    assert (await cashier.payment(created["id"]))["state"] == "pending"
    assert (await client.balance(player)).cash == 0


async def test_several_v1_signatures_one_valid_is_accepted(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str) -> None:
    """Secret rotation: a header with an old and the current v1 value verifies."""
    created = await cashier.deposit(player, 7_00)
    body = session_completed(created, event_id=f"evt_rot_{created['id']}")
    now = int(time.time())
    valid = sign_header(SECRET, now, body).split(",v1=")[1]
    status, _ = await post_stripe(cashier, body, signature=f"t={now},v1={'a' * 64},v1={valid}")
    assert status == 200
    await cashier.wait_state(created["id"], "succeeded")


async def test_oversized_webhook_body_is_refused_before_it_is_read(
        bridge: BridgeRunning, cashier: Cashier) -> None:
    """A 10 MB body gets 413 without being verified or stored."""
    status, answer = await post_stripe(cashier, b"{" + b" " * (10 * 1024 * 1024) + b"}",
                                       signature="t=1,v1=00")
    assert status == 413, answer


async def test_unknown_event_type_and_unknown_payment_are_recorded_and_ignored(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection) -> None:
    """Valid signature, nothing to act on: 2xx (so the PSP stops retrying), inbox `ignored`."""
    created = await cashier.deposit(player, 9_00)
    unknown_type = session_completed(created, event_id=f"evt_unk_{created['id']}",
                                     event_type="customer.created")
    ghost = dict(created, id="pay_" + "0" * 24, psp_reference="cs_ghost")
    unknown_payment = session_completed(ghost, event_id=f"evt_ghost_{created['id']}")
    for body in (unknown_type, unknown_payment):
        status, _ = await post_stripe(cashier, body,
                                      signature=sign_header(SECRET, int(time.time()), body))
        assert status == 200
    await bridge.services.inbox.drain()

    async def settled() -> bool:
        n = await bridge_conn.fetchval(
            "SELECT count(*) FROM bridge.inbox WHERE event_key = ANY($1::text[]) "
            "AND status = 'ignored'",
            [f"evt_unk_{created['id']}", f"evt_ghost_{created['id']}"])
        return bool(n == 2)
    async with asyncio.timeout(10):
        while not await settled():
            await asyncio.sleep(0.05)
    assert (await cashier.payment(created["id"]))["state"] == "pending"
    assert (await client.balance(player)).cash == 0


async def test_unknown_psp_webhook_is_404(bridge: BridgeRunning, cashier: Cashier) -> None:
    """Only configured PSPs have webhook endpoints."""
    async with cashier.http.post(f"{cashier.url}/webhooks/paypal", data=b"{}") as r:
        assert r.status == 404


GOOD = {"player_id": "p-1", "amount_minor": 1000, "currency": "USD", "psp": "stripe",
        "method": "card"}


@pytest.mark.parametrize(("body", "field"), [
    ({k: v for k, v in GOOD.items() if k != "player_id"}, "player_id"),
    ({**GOOD, "player_id": "bad id with spaces"}, "player_id"),
    ({**GOOD, "player_id": "x" * 65}, "player_id"),
    ({**GOOD, "amount_minor": 10.5}, "amount_minor"),
    ({**GOOD, "amount_minor": "1000"}, "amount_minor"),
    ({**GOOD, "amount_minor": 0}, "amount_minor"),
    ({**GOOD, "amount_minor": -5}, "amount_minor"),
    ({**GOOD, "amount_minor": True}, "amount_minor"),
    ({**GOOD, "amount_minor": 2**63}, "amount_minor"),
    ({**GOOD, "currency": "XXX"}, "currency"),
    ({**GOOD, "currency": "usd"}, "currency"),
    ({**GOOD, "psp": "paypal"}, "psp"),
    ({**GOOD, "method": ""}, "method"),
    ({**GOOD, "method": "Card\n"}, "method"),
    ({**GOOD, "psp": "nowpayments", "method": "crypto"}, "pay_currency"),
    ({**GOOD, "return_url": "javascript:alert(1)"}, "return_url"),
    ([GOOD], "body"),
])
async def test_bad_deposit_requests_name_the_field_and_store_nothing(
        body: Any, field: str, bridge: BridgeRunning, cashier: Cashier,
        bridge_conn: asyncpg.Connection) -> None:
    """Each malformed field: 400 FIELD_INVALID naming it; no payment row."""
    before = await bridge_conn.fetchval("SELECT count(*) FROM bridge.payments")
    status, answer = await cashier.request("POST", "/v1/deposits", body=body,
                                           headers={"Idempotency-Key": f"bad-{field}"})
    assert status == 400, answer
    assert answer["error"]["field"] == field and field in answer["error"]["message"]
    assert await bridge_conn.fetchval("SELECT count(*) FROM bridge.payments") == before


async def test_cashier_requests_without_auth_key_type_or_json_are_refused(
        bridge: BridgeRunning, cashier: Cashier) -> None:
    """No/unknown API key 401, no Idempotency-Key 400, wrong content type 415, bad JSON 400,
    oversized 413, unknown path 404."""
    url = f"{cashier.url}/v1/deposits"
    key = {"Idempotency-Key": "k-edge"}
    async with cashier.http.post(url, json=GOOD, headers=key) as r:
        assert r.status == 401
    async with cashier.http.post(url, json=GOOD, headers={
            **key, "Authorization": "Bearer not-a-key-at-all-0000"}) as r:
        assert r.status == 401
    status, answer = await cashier.request("POST", "/v1/deposits", body=GOOD)
    assert (status, answer["error"]["field"]) == (400, "Idempotency-Key")
    async with cashier.http.post(url, data=b"player_id=1", headers={
            **cashier.auth, **key, "Content-Type": "application/x-www-form-urlencoded"}) as r:
        assert r.status == 415
    async with cashier.http.post(url, data=b'{"player_id": ', headers={
            **cashier.auth, **key, "Content-Type": "application/json"}) as r:
        assert r.status == 400 and (await r.json())["error"]["field"] == "body"
    async with cashier.http.post(url, data=b"[" + b"1," * 200_000 + b"1]", headers={
            **cashier.auth, **key, "Content-Type": "application/json"}) as r:
        assert r.status == 413
    status, answer = await cashier.request("GET", "/v1/payments/pay_nope")
    assert (status, answer["error"]["code"]) == (404, "NOT_FOUND")
