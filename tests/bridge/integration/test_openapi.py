"""The bridge's OpenAPI contract (gateway_bridge/http/openapi.json) held to the running bridge:
the document is valid OpenAPI 3.1 and is what GET /openapi.json serves; its operations are
exactly the routes the application registers; and every endpoint's answers, successes and
errors alike, match it, both for requests the contract accepts and for bad requests, which it
must refuse as the bridge does (tests/bridge/openapi_check.py). The last tests prove the check
itself fails on a wrong answer, on an undocumented route, and on enums that left the code."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from aiohttp import web
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from gateway_bridge import server
from gateway_bridge.http import openapi as http_openapi
from gateway_bridge.http.context import SERVICES
from gateway_bridge.kyc import onfido
from gateway_bridge.kyc.model import KycState
from gateway_bridge.payments.model import State
from gateway_bridge.psp import adyen, nowpayments
from gateway_bridge.psp.registry import ADAPTERS
from gateway_bridge.psp.stripe import sign_header
from gateway_bridge.risk.rules import Outcome
from gateway_bridge.shared.money import EXPONENTS
from gateway_bridge.shared.terms import Direction
from tests.bridge.conftest import OTHER_API_KEY, PSP_ENV, BridgeFactory, Cashier
from tests.bridge.openapi_check import (
    Answer,
    ContractClient,
    SentRequest,
    check_exchange,
    documented_operations,
    registered_operations,
)
from tests.faults.proxy import SlowProxy
from tests.helpers import Client

SUPPORT = {"Authorization": f"Bearer {OTHER_API_KEY}"}
NO_SUCH_KEY = {"Authorization": "Bearer no-such-key-0123456789abcdef"}
# Review above 50.00 USD, deny above 90.00; the "other" client decides reviews.
REVIEW_ENV = {"BRIDGE_RISK_AMOUNT_MINOR": '{"USD": [5000, 9000]}',
              "BRIDGE_RISK_SUPPORT_CLIENTS": "other"}


@pytest.fixture
def api(cashier: Cashier) -> ContractClient:
    return ContractClient(cashier.http, cashier.url, headers=dict(cashier.auth))


def code_of(answer: Answer) -> str:
    return str(answer.json()["error"]["code"])


def field_of(answer: Answer) -> str | None:
    field: str | None = answer.json()["error"].get("field")
    return field


def deposit_body(player: str, amount_minor: int = 10_00, **extra: Any) -> dict[str, Any]:
    return {"player_id": player, "amount_minor": amount_minor, "currency": "USD",
            "psp": "stripe", "method": "card", **extra}


def withdrawal_body(player: str, amount_minor: int, **extra: Any) -> dict[str, Any]:
    return {"player_id": player, "amount_minor": amount_minor, "currency": "USD",
            "psp": "stripe", "method": "bank_transfer", "destination": "acct_test_123",
            **extra}


# --- the document --------------------------------------------------------------------------

async def test_the_served_document_is_valid_openapi_31_and_the_packaged_file(
        bridge: server.Running, api: ContractClient) -> None:
    """GET /openapi.json needs no key, answers JSON, and is the packaged file, which
    openapi-spec-validator accepts as OpenAPI 3.1."""
    served = await api.call("GET", "/openapi.json", auth=False)
    assert served.status_code == 200 and served.content_type == "application/json"
    document = served.json()
    validate(document, cls=OpenAPIV31SpecValidator)
    packaged = Path(http_openapi.__file__).with_name(http_openapi.DOCUMENT_FILE).read_bytes()
    assert document == orjson.loads(packaged)
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["version"] == "1.0.0"
    assert "stable" in document["info"]["x-api-stability"]["/v1"]


class _RecordingWeb:
    """aiohttp.web as gateway_bridge.server sees it, keeping every application it runs."""

    def __init__(self) -> None:
        self.apps: list[web.Application] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(web, name)

    def AppRunner(self, app: web.Application, **kwargs: Any) -> web.AppRunner:
        self.apps.append(app)
        return web.AppRunner(app, **kwargs)


async def test_every_route_has_an_operation_and_every_operation_a_route(
        make_bridge: BridgeFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The (method, path template) pairs of the application the bridge really serves (built
    and extended by server.running, risk review routes included) equal the document's
    operations: a route added without its contract fails here, and so does a stale one."""
    recording = _RecordingWeb()
    monkeypatch.setattr(server, "web", recording)
    async with make_bridge():
        pass
    [app] = [a for a in recording.apps if SERVICES in a]
    registered, documented = registered_operations(app), documented_operations()
    assert registered - documented == set(), "routes with no operation in openapi.json"
    assert documented - registered == set(), "operations in openapi.json with no route"


# --- cashier -------------------------------------------------------------------------------

async def test_deposits_answer_as_the_contract_says(
        bridge: server.Running, api: ContractClient, player: str) -> None:
    """POST /v1/deposits: 201 (checkout, crypto, stored card), 200 replay, 409 key reuse."""
    key = {"Idempotency-Key": f"oa-dep-{player}"}
    created = await api.call("POST", "/v1/deposits", json=deposit_body(player), headers=key)
    assert created.status_code == 201, created.data
    assert created.json()["instructions"]["checkout_url"]
    again = await api.call("POST", "/v1/deposits", json=deposit_body(player), headers=key)
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    reused = await api.call("POST", "/v1/deposits", json=deposit_body(player, 11_00),
                            headers=key)
    assert reused.status_code == 409 and code_of(reused) == "IDEMPOTENCY_KEY_REUSED"

    crypto = await api.call("POST", "/v1/deposits", headers={"Idempotency-Key": f"oa-np-{player}"},
                            json=deposit_body(player, psp="nowpayments", method="crypto",
                                              pay_currency="btc"))
    assert crypto.status_code == 201, crypto.data
    assert crypto.json()["instructions"]["pay_address"]
    card = await api.call("POST", "/v1/deposits", headers={"Idempotency-Key": f"oa-tok-{player}"},
                          json=deposit_body(player, payment_token="tok_visa_oa_0001"))
    assert card.status_code == 201, card.data


async def test_bad_deposit_requests_are_refused_by_the_bridge_and_the_contract(
        bridge: server.Running, api: ContractClient, player: str) -> None:
    """POST /v1/deposits: 400 for each kind of bad field, header and body, 401 without or
    with an unknown key, 413, 415; the contract refuses each request the bridge refuses
    (but the unknown key, which only the bridge can know)."""
    key = {"Idempotency-Key": f"oa-bad-{player}"}
    bad_fields: list[tuple[dict[str, Any], str]] = [
        (deposit_body(player, 10.5), "amount_minor"),
        (deposit_body(player, "1000"), "amount_minor"),
        (deposit_body(player, 0), "amount_minor"),
        (deposit_body(player, currency="XXX"), "currency"),
        (deposit_body(player, psp="paypal"), "psp"),
        (deposit_body("", 10_00), "player_id"),
        (deposit_body(player, method="Card!"), "method"),
        (deposit_body(player, psp="nowpayments", method="crypto"), "pay_currency"),
        (deposit_body(player, payment_token="4242424242424242"), "payment_token"),
        (deposit_body(player, country="de"), "country"),
        (deposit_body(player, return_url="ftp://x"), "return_url"),
    ]
    for n, (body, field) in enumerate(bad_fields):
        bad = await api.call("POST", "/v1/deposits", json=body, request_valid=False,
                             headers={"Idempotency-Key": f"oa-bad-{n}-{player}"})
        assert (bad.status_code, code_of(bad), field_of(bad)) == (400, "FIELD_INVALID", field)

    no_key = await api.call("POST", "/v1/deposits", json=deposit_body(player),
                            request_valid=False)
    assert no_key.status_code == 400 and field_of(no_key) == "Idempotency-Key"
    for raw in (b"{not json", b"[1, 2]"):
        not_object = await api.call("POST", "/v1/deposits", data=raw, request_valid=False,
                                    headers={**key, "Content-Type": "application/json"})
        assert not_object.status_code == 400 and field_of(not_object) == "body"
    text = await api.call("POST", "/v1/deposits", data=orjson.dumps(deposit_body(player)),
                          headers={**key, "Content-Type": "text/plain"}, request_valid=False)
    assert text.status_code == 415 and code_of(text) == "UNSUPPORTED_MEDIA_TYPE"
    huge = await api.call("POST", "/v1/deposits", headers=key, request_valid=False,
                          json=deposit_body(player, padding="x" * 300_000))
    assert huge.status_code == 413 and code_of(huge) == "BODY_TOO_LARGE"

    anonymous = await api.call("POST", "/v1/deposits", json=deposit_body(player), headers=key,
                               auth=False, request_valid=False)
    assert anonymous.status_code == 401 and code_of(anonymous) == "UNAUTHENTICATED"
    stranger = await api.call("POST", "/v1/deposits", json=deposit_body(player),
                              headers={**key, **NO_SUCH_KEY})
    assert stranger.status_code == 401 and code_of(stranger) == "UNAUTHENTICATED"


async def test_an_unavailable_psp_answers_503_with_retry_after(
        bridge: server.Running, api: ContractClient, cashier: Cashier, player: str) -> None:
    """The PSP is down: 503 PSP_UNAVAILABLE with the Retry-After header the contract
    declares."""
    await cashier.knobs(down=True)
    down = await api.call("POST", "/v1/deposits", json=deposit_body(player),
                          headers={"Idempotency-Key": f"oa-down-{player}"})
    assert down.status_code == 503 and code_of(down) == "PSP_UNAVAILABLE", down.data
    assert down.headers["Retry-After"] == "1"


@pytest.fixture
async def declining_psp() -> AsyncIterator[str]:
    """A stand-in Stripe that refuses every request with a 400, as Stripe does a bad one."""
    async def refuse(_: web.Request) -> web.Response:
        return web.json_response({"error": {"type": "invalid_request_error",
                                            "code": "parameter_invalid_integer",
                                            "message": "Invalid integer: amount"}}, status=400)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_psp_that_refuses_the_deposit_answers_502(
        make_bridge: BridgeFactory, api: ContractClient, declining_psp: str,
        player: str) -> None:
    """The PSP refuses the bridge's request outright: 502 PSP_DECLINED."""
    async with make_bridge(BRIDGE_STRIPE_BASE_URL=declining_psp):
        declined = await api.call("POST", "/v1/deposits", json=deposit_body(player),
                                  headers={"Idempotency-Key": f"oa-502-{player}"})
        assert declined.status_code == 502 and code_of(declined) == "PSP_DECLINED"


async def test_approving_a_deposit_its_psp_refuses_answers_502(
        make_bridge: BridgeFactory, api: ContractClient, declining_psp: str,
        player: str) -> None:
    """A held deposit reaches its PSP only when support approves it; the PSP's refusal then
    is the approval's answer: 502 PSP_DECLINED, and the payment is failed."""
    async with make_bridge(BRIDGE_STRIPE_BASE_URL=declining_psp, **REVIEW_ENV):
        held = await api.call("POST", "/v1/deposits", json=deposit_body(player, 60_00),
                              headers={"Idempotency-Key": f"oa-held-502-{player}"})
        assert held.status_code == 202 and held.json()["risk"]["review"] == "pending"
        approved = await api.call("POST", f"/v1/risk/reviews/{held.json()['id']}/approve",
                                  json={"actor": "alice", "reason": "known player"},
                                  headers=SUPPORT)
        assert approved.status_code == 502 and code_of(approved) == "PSP_DECLINED", \
            approved.data
        payment = await api.call("GET", f"/v1/payments/{held.json()['id']}")
        assert payment.json()["state"] == "failed", payment.data


async def test_withdrawals_and_payments_answer_as_the_contract_says(
        bridge: server.Running, api: ContractClient, client: Client, player: str) -> None:
    """POST /v1/withdrawals: 202, 200 replay, 422 the wallet's refusal, 400, 401;
    GET /v1/payments/{id}: 200 with history, 404 unknown or another client's, 401."""
    await client.funded(player, 50_00)
    key = {"Idempotency-Key": f"oa-wd-{player}"}
    accepted = await api.call("POST", "/v1/withdrawals", json=withdrawal_body(player, 20_00),
                              headers=key)
    assert accepted.status_code == 202, accepted.data
    again = await api.call("POST", "/v1/withdrawals", json=withdrawal_body(player, 20_00),
                           headers=key)
    assert again.status_code == 200 and again.json()["id"] == accepted.json()["id"]
    broke = await api.call("POST", "/v1/withdrawals", json=withdrawal_body(player, 1_000_00),
                           headers={"Idempotency-Key": f"oa-wd-big-{player}"})
    assert broke.status_code == 422 and code_of(broke) == "INSUFFICIENT_FUNDS", broke.data
    nowhere = withdrawal_body(player, 1_00)
    del nowhere["destination"]
    missing = await api.call("POST", "/v1/withdrawals", json=nowhere, request_valid=False,
                             headers={"Idempotency-Key": f"oa-wd-nd-{player}"})
    assert missing.status_code == 400 and field_of(missing) == "destination"
    anonymous = await api.call("POST", "/v1/withdrawals", json=withdrawal_body(player, 1_00),
                               headers=key, auth=False, request_valid=False)
    assert anonymous.status_code == 401

    payment_id = accepted.json()["id"]
    shown = await api.call("GET", f"/v1/payments/{payment_id}")
    assert shown.status_code == 200 and shown.json()["history"], shown.data
    unknown = await api.call("GET", "/v1/payments/pay_000000000000000000000000")
    assert unknown.status_code == 404 and code_of(unknown) == "NOT_FOUND"
    theirs = await api.call("GET", f"/v1/payments/{payment_id}", headers=SUPPORT)
    assert theirs.status_code == 404
    anonymous = await api.call("GET", f"/v1/payments/{payment_id}", auth=False,
                               request_valid=False)
    assert anonymous.status_code == 401


# --- risk reviews --------------------------------------------------------------------------

async def test_risk_screening_and_reviews_answer_as_the_contract_says(
        make_bridge: BridgeFactory, api: ContractClient, client: Client, player: str) -> None:
    """A deposit held for review (202) and one denied (422 RISK_DENIED with reasons); the
    review list (200, 403 RISK_SUPPORT_ONLY, 401); approve and reject (200, again 200, the
    other verdict 409, 404, 400, 415)."""
    await client.funded(player, 100_00)
    async with make_bridge(**REVIEW_ENV):
        held = await api.call("POST", "/v1/deposits", json=deposit_body(player, 60_00),
                              headers={"Idempotency-Key": f"oa-held-{player}"})
        assert held.status_code == 202 and held.json()["risk"]["review"] == "pending"
        denied = await api.call("POST", "/v1/deposits", json=deposit_body(player, 95_00),
                                headers={"Idempotency-Key": f"oa-deny-{player}"})
        assert denied.status_code == 422 and code_of(denied) == "RISK_DENIED"
        assert denied.json()["error"]["reasons"] and denied.json()["error"]["payment_id"]
        held_out = await api.call("POST", "/v1/withdrawals",
                                  json=withdrawal_body(player, 60_00),
                                  headers={"Idempotency-Key": f"oa-held-wd-{player}"})
        assert held_out.status_code == 202 and held_out.json()["state"] == "reserved"

        listing = await api.call("GET", "/v1/risk/reviews", headers=SUPPORT)
        assert listing.status_code == 200
        assert {held.json()["id"], held_out.json()["id"]} <= {
            r["payment_id"] for r in listing.json()["reviews"]}
        cashier_only = await api.call("GET", "/v1/risk/reviews")
        assert cashier_only.status_code == 403 and code_of(cashier_only) == "RISK_SUPPORT_ONLY"
        anonymous = await api.call("GET", "/v1/risk/reviews", auth=False, request_valid=False)
        assert anonymous.status_code == 401 and code_of(anonymous) == "UNAUTHENTICATED"

        decision = {"actor": "alice", "reason": "known player"}
        approve = f"/v1/risk/reviews/{held.json()['id']}/approve"
        approved = await api.call("POST", approve, json=decision, headers=SUPPORT)
        assert approved.status_code == 200 and approved.json()["state"] == "pending", \
            approved.data
        twice = await api.call("POST", approve, json=decision, headers=SUPPORT)
        assert twice.status_code == 200 and twice.json()["id"] == held.json()["id"]
        overruled = await api.call("POST", f"/v1/risk/reviews/{held.json()['id']}/reject",
                                   json=decision, headers=SUPPORT)
        assert overruled.status_code == 409 and code_of(overruled) == "RISK_NOT_IN_REVIEW"
        unknown = await api.call("POST", "/v1/risk/reviews/pay_000000000000000000000000/approve",
                                 json=decision, headers=SUPPORT)
        assert unknown.status_code == 404
        reject = f"/v1/risk/reviews/{held_out.json()['id']}/reject"
        no_reason = await api.call("POST", reject, json={"actor": "bob"}, headers=SUPPORT,
                                   request_valid=False)
        assert no_reason.status_code == 400 and field_of(no_reason) == "reason"
        text = await api.call("POST", reject, data=orjson.dumps(decision), request_valid=False,
                              headers={**SUPPORT, "Content-Type": "text/plain"})
        assert text.status_code == 415
        rejected = await api.call("POST", reject, json=decision, headers=SUPPORT)
        assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"


# --- KYC -----------------------------------------------------------------------------------

def kyc_webhook(check_id: str, action: str, *, completed_at: str = "") -> bytes:
    obj = {"id": check_id, "status": "complete" if completed_at else "in_progress",
           "href": f"https://api.onfido.com/v3.6/checks/{check_id}"}
    if completed_at:
        obj["completed_at_iso8601"] = completed_at
    return orjson.dumps({"payload": {"resource_type": "check", "action": action,
                                     "object": obj}})


def onfido_signed(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", onfido.SIGNATURE_HEADER: onfido.signature(
        PSP_ENV["BRIDGE_KYC_ONFIDO_WEBHOOK_TOKEN"], body)}


async def test_kyc_endpoints_answer_as_the_contract_says(
        make_bridge: BridgeFactory, sim: str, api: ContractClient, cashier: Cashier,
        player: str) -> None:
    """GET and POST /v1/players/{id}/kyc (200, 202, 400 bad path or name, 401) and the
    provider's webhook (200 applied, 503 for a check not known yet, 401 unsigned or forged,
    400 malformed)."""
    async with make_bridge(BRIDGE_KYC_ONFIDO_BASE_URL=f"{sim}/onfido"):
        path = f"/v1/players/{player}/kyc"
        fresh = await api.call("GET", path)
        assert fresh.status_code == 200 and fresh.json()["state"] == "unverified"
        name = {"first_name": "Ada", "last_name": "Lovelace"}
        started = await api.call("POST", path, json=name)
        assert started.status_code == 202 and started.json()["state"] == "pending"
        check_id = started.json()["check_id"]
        blank = await api.call("POST", path, json={**name, "first_name": "  "},
                               request_valid=False)
        assert blank.status_code == 400 and field_of(blank) == "first_name"
        bad_player = await api.call("GET", "/v1/players/-bad/kyc", request_valid=False)
        assert bad_player.status_code == 400 and field_of(bad_player) == "player_id"
        anonymous = await api.call("POST", path, json=name, auth=False, request_valid=False)
        assert anonymous.status_code == 401

        done = await cashier.sim(f"/_sim/kyc/checks/{check_id}/complete",
                                 {"result": "clear", "deliver": False})
        assert done["status"] == "complete"
        body = kyc_webhook(check_id, "check.completed", completed_at="2024-01-01T00:00:00Z")
        applied = await api.call("POST", "/webhooks/kyc/onfido", data=body, auth=False,
                                 headers=onfido_signed(body))
        assert applied.status_code == 200, applied.data
        verified = await api.call("GET", path)
        assert verified.json()["state"] == "verified" and len(verified.json()["history"]) == 2

        early = kyc_webhook("chk_not_known_yet", "check.completed", completed_at="2024-01-01")
        unknown = await api.call("POST", "/webhooks/kyc/onfido", data=early, auth=False,
                                 headers=onfido_signed(early))
        assert unknown.status_code == 503 and code_of(unknown) == "UNAVAILABLE"
        unsigned = await api.call("POST", "/webhooks/kyc/onfido", data=body, auth=False,
                                  headers={"Content-Type": "application/json"},
                                  request_valid=False)
        assert unsigned.status_code == 401 and code_of(unsigned) == "WEBHOOK_UNSIGNED"
        forged = await api.call("POST", "/webhooks/kyc/onfido", data=body, auth=False,
                                headers={**onfido_signed(body),
                                         onfido.SIGNATURE_HEADER: "0" * 64})
        assert forged.status_code == 401 and code_of(forged) == "WEBHOOK_SIGNATURE_INVALID"
        shapeless = b'{"event": "check.completed"}'
        malformed = await api.call("POST", "/webhooks/kyc/onfido", data=shapeless, auth=False,
                                   headers=onfido_signed(shapeless), request_valid=False)
        assert malformed.status_code == 400 and code_of(malformed) == "WEBHOOK_MALFORMED"


async def test_kyc_endpoints_without_a_provider(
        bridge: server.Running, api: ContractClient, player: str) -> None:
    """No KYC provider configured: the API answers 422 KYC_NOT_ENABLED, the webhook 404."""
    off = await api.call("POST", f"/v1/players/{player}/kyc",
                         json={"first_name": "Ada", "last_name": "Lovelace"})
    assert off.status_code == 422 and code_of(off) == "KYC_NOT_ENABLED"
    shown = await api.call("GET", f"/v1/players/{player}/kyc")
    assert shown.status_code == 422
    body = kyc_webhook("chk_1", "check.completed", completed_at="2024-01-01T00:00:00Z")
    nowhere = await api.call("POST", "/webhooks/kyc/onfido", data=body, auth=False,
                             headers=onfido_signed(body))
    assert nowhere.status_code == 404 and code_of(nowhere) == "NOT_FOUND"


# --- PSP webhooks --------------------------------------------------------------------------

def stripe_event(event_id: str, **extra: Any) -> bytes:
    """An event the bridge stores and ignores (no payment is touched)."""
    return orjson.dumps({"id": event_id, "object": "event", "type": "customer.created",
                         "created": int(time.time()), "data": {"object": {"id": "cus_1"}},
                         **extra})


def stripe_signed(body: bytes, *, at_s: int | None = None) -> dict[str, str]:
    secret = PSP_ENV["BRIDGE_STRIPE_WEBHOOK_SECRET"]
    return {"Content-Type": "application/json",
            "Stripe-Signature": sign_header(secret, at_s or int(time.time()), body)}


def adyen_notification(reference: str) -> bytes:
    item = {"pspReference": reference, "originalReference": "", "merchantAccountCode":
            PSP_ENV["BRIDGE_ADYEN_MERCHANT_ACCOUNT"], "merchantReference": "oa-report",
            "amount": {"value": 0, "currency": "EUR"}, "eventCode": "REPORT_AVAILABLE",
            "success": "true", "eventDate": "2024-01-01T00:00:00+00:00"}
    key = bytes.fromhex(PSP_ENV["BRIDGE_ADYEN_HMAC_KEY"])
    return orjson.dumps({"live": "false", "notificationItems": [
        {"NotificationRequestItem": adyen.sign_item(item, key)}]})


def nowpayments_ipn(reference: int) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps({"payment_id": reference, "payment_status": "oa_not_a_status",
                         "order_id": "pay_000000000000000000000000", "price_amount": 10,
                         "price_currency": "usd", "pay_amount": 0.0001, "pay_currency": "btc",
                         "actually_paid": 0})
    secret = PSP_ENV["BRIDGE_NOWPAYMENTS_IPN_SECRET"]
    return body, {"Content-Type": "application/json",
                  nowpayments.SIGNATURE_HEADER: nowpayments.signature(secret, body)}


async def test_psp_webhooks_answer_as_the_contract_says(
        bridge: server.Running, api: ContractClient, player: str) -> None:
    """POST /webhooks/{psp}: each PSP's 200 acknowledgement (JSON or text), 401 unsigned,
    forged or stale, 400 malformed, 404 for a PSP the bridge does not serve, 413."""
    stripe = stripe_event(f"evt_oa_{player}")
    stored = await api.call("POST", "/webhooks/stripe", data=stripe, auth=False,
                            headers=stripe_signed(stripe))
    assert stored.status_code == 200 and stored.json() == {"received": True}
    accepted = await api.call("POST", "/webhooks/adyen", data=adyen_notification(f"oa{player}"),
                              auth=False, headers={"Content-Type": "application/json"})
    assert (accepted.status_code, accepted.data) == (200, b"[accepted]")
    ipn, signed = nowpayments_ipn(int(time.time() * 1000))
    ok = await api.call("POST", "/webhooks/nowpayments", data=ipn, auth=False, headers=signed)
    assert (ok.status_code, ok.data) == (200, b"ok")

    unsigned = await api.call("POST", "/webhooks/stripe", data=stripe, auth=False,
                              headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401 and code_of(unsigned) == "WEBHOOK_UNSIGNED"
    forged = await api.call("POST", "/webhooks/stripe", data=stripe, auth=False,
                            headers=stripe_signed(stripe_event("evt_other")))
    assert forged.status_code == 401 and code_of(forged) == "WEBHOOK_SIGNATURE_INVALID"
    stale = await api.call("POST", "/webhooks/stripe", data=stripe, auth=False,
                           headers=stripe_signed(stripe, at_s=int(time.time()) - 3600))
    assert stale.status_code == 401 and code_of(stale) == "WEBHOOK_STALE"
    shapeless = b'{"hello": "world"}'
    malformed = await api.call("POST", "/webhooks/stripe", data=shapeless, auth=False,
                               headers=stripe_signed(shapeless), request_valid=False)
    assert malformed.status_code == 400 and code_of(malformed) == "WEBHOOK_MALFORMED"
    unknown_psp = await api.call("POST", "/webhooks/paypal", data=stripe, auth=False,
                                 headers=stripe_signed(stripe), request_valid=False)
    assert unknown_psp.status_code == 404 and code_of(unknown_psp) == "NOT_FOUND"
    huge = stripe_event("evt_huge", padding="x" * 300_000)
    too_large = await api.call("POST", "/webhooks/stripe", data=huge, auth=False,
                               headers=stripe_signed(huge))
    assert too_large.status_code == 413 and code_of(too_large) == "BODY_TOO_LARGE"


# --- operations ----------------------------------------------------------------------------

async def test_probes_answer_as_the_contract_says(
        bridge: server.Running, api: ContractClient) -> None:
    """GET /healthz and /readyz, without a key."""
    alive = await api.call("GET", "/healthz", auth=False)
    assert alive.status_code == 200
    ready = await api.call("GET", "/readyz", auth=False)
    assert ready.status_code == 200
    assert set(ready.json()["psps"]) == {"stripe", "adyen", "nowpayments"}


async def test_a_bridge_that_lost_its_database_answers_as_the_contract_says(
        make_bridge: BridgeFactory, bridge_db: str, api: ContractClient, player: str) -> None:
    """The database goes away under a running bridge: /readyz is 503, a PSP's webhook is
    503 (not stored, so the PSP delivers it again) and the cashier API is 503 UNAVAILABLE,
    each in the documented shape; liveness still answers."""
    db = urlsplit(bridge_db)
    cut = SlowProxy(db.hostname or "127.0.0.1", db.port or 5432)
    await cut.start()
    try:
        async with make_bridge(DATABASE_URL=cut.url(bridge_db), workers=False):
            assert (await api.call("GET", "/readyz", auth=False)).status_code == 200
            await cut.close()  # every connection cut, no new one accepted
            ready = await api.call("GET", "/readyz", auth=False)
            assert ready.json() == {"status": "unavailable", "database": "down"}, ready.data
            stripe = stripe_event(f"evt_oa_nodb_{player}")
            webhook = await api.call("POST", "/webhooks/stripe", data=stripe, auth=False,
                                     headers=stripe_signed(stripe))
            assert webhook.status_code == 503 and code_of(webhook) == "UNAVAILABLE", \
                webhook.data
            deposit = await api.call("POST", "/v1/deposits", json=deposit_body(player),
                                     headers={"Idempotency-Key": f"oa-nodb-{player}"})
            assert deposit.status_code == 503 and code_of(deposit) == "UNAVAILABLE", \
                deposit.data
            alive = await api.call("GET", "/healthz", auth=False)
            assert alive.status_code == 200
    finally:
        await cut.close()


async def test_a_bug_answers_500_with_only_a_request_id(
        bridge: server.Running, api: ContractClient, caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected exception is 500 INTERNAL in the documented shape, saying nothing of
    itself; its traceback is logged under the request id the caller got."""
    async def broken() -> dict[str, int]:
        raise RuntimeError("detail-for-the-log-only")
    bridge.services.inbox.counts = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="gateway_bridge.http"):
        answer = await api.call("GET", "/readyz", auth=False)
    assert answer.status_code == 500 and code_of(answer) == "INTERNAL", answer.data
    assert b"detail-for-the-log-only" not in answer.data
    request_id = answer.json()["error"]["request_id"]
    [logged] = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    assert logged.exc_info is not None and "detail-for-the-log-only" in str(logged.exc_info[1])


# --- the check itself ------------------------------------------------------------------------

def _payment(**changes: Any) -> dict[str, Any]:
    """A payment as GET /v1/payments/{id} answers it; a change to `...` leaves the field out."""
    payment: dict[str, Any] = {
        "id": "pay_0123456789abcdef01234567", "direction": "deposit", "state": "pending",
        "psp": "stripe", "method": "card", "player_id": "p-1", "currency": "USD",
        "amount_minor": 10_00, "settled_minor": 0, "charged_back_minor": 0,
        "psp_reference": "cs_1", "withdrawal_id": None, "attention": None,
        "created_at": "2024-01-01T00:00:00+00:00", "updated_at": "2024-01-01T00:00:00+00:00",
        "history": []}
    payment.update(changes)
    return {k: v for k, v in payment.items() if v is not ...}


def _exchange(status: int, body: Any) -> tuple[SentRequest, Answer]:
    """A valid GET /v1/payments/{id} and the given answer to it."""
    request = SentRequest.of("GET", "http://127.0.0.1:8080/v1/payments/pay_1", body=None,
                             headers={"Authorization": "Bearer k"})
    answer = Answer(status_code=status, content_type="application/json", headers={},
                    data=orjson.dumps(body))
    return request, answer


@pytest.mark.parametrize(("status", "body"), [
    (200, _payment(state=...)),
    (200, _payment(amount_minor=10.5)),
    (200, _payment(amount_minor="1000")),
    (200, _payment(state="lost")),
    (200, _payment(unexpected_field=1)),
    (200, _payment(history=...)),
    (404, {"error": {"code": "NOT_FOUND", "message": "no such payment"}}),
    (404, {"error": {"code": "NOT_FOUND", "message": "x", "request_id": "0123456789abcdef",
                     "stack": "..."}}),
    (418, {"error": {"code": "TEAPOT", "message": "x", "request_id": "0123456789abcdef"}}),
], ids=["missing-state", "float-amount", "string-amount", "unknown-state", "extra-field",
        "no-history", "error-without-request-id", "error-with-extra-field",
        "undeclared-status"])
def test_the_check_fails_on_an_answer_that_breaks_the_contract(
        status: int, body: dict[str, Any]) -> None:
    """Each wrong answer is caught, and the right one next to it passes: the check bites."""
    check_exchange(*_exchange(200, _payment()))
    with pytest.raises(AssertionError, match="breaks the contract"):
        check_exchange(*_exchange(status, body))


def test_the_check_fails_when_the_contract_accepts_what_the_bridge_refused() -> None:
    """A test that says the bridge refused a request the contract calls valid fails."""
    request, answer = _exchange(200, _payment())
    with pytest.raises(AssertionError, match="the contract accepts it"):
        check_exchange(request, answer, request_valid=False)


def test_the_route_comparison_sees_an_undocumented_route() -> None:
    """A route the document does not describe shows up in the comparison."""
    app = web.Application()

    async def handler(_: web.Request) -> web.Response:
        return web.Response()
    app.router.add_get("/healthz", handler)
    app.router.add_post("/v1/refunds", handler)
    assert registered_operations(app) - documented_operations() == {("POST", "/v1/refunds")}


@pytest.mark.parametrize(("schema", "values"), [
    ("Currency", set(EXPONENTS)),
    ("Psp", set(ADAPTERS)),
    ("PaymentState", {s.value for s in State}),
    ("Direction", {d.value for d in Direction}),
    ("RiskOutcome", {o.value for o in Outcome}),
    ("KycState", {s.value for s in KycState}),
])
def test_the_document_enums_are_the_codes_enums(schema: str, values: set[str]) -> None:
    """A currency, PSP or state added in the code without the contract fails here."""
    document = orjson.loads(http_openapi.load())
    assert set(document["components"]["schemas"][schema]["enum"]) == values
