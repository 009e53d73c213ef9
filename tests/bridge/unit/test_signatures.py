"""Webhook signatures and event mapping of the PSP adapters: pure, no services.

The providers' documented signature vectors verify; every rejection cause is produced by the case that should
produce it; the official `stripe` and `Adyen` libraries, used as independent generators and
verifiers, agree with ours in both directions. That NOWPayments' canonical form matches
what JavaScript writes is checked with node in tests/bridge/integration/test_signatures_node.py.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
from decimal import Decimal
from typing import Any

import Adyen.util as adyen_util
import orjson
import pytest
import stripe as stripe_lib

from gateway_bridge.psp import adyen, nowpayments, stripe
from gateway_bridge.psp.adyen import AdyenAdapter
from gateway_bridge.psp.base import PspConfig, WebhookRejected
from gateway_bridge.psp.nowpayments import NowPaymentsAdapter
from gateway_bridge.psp.stripe import StripeAdapter
from gateway_bridge.shared.events import EventKind, PspEvent

STRIPE_SECRET = "whsec_test_secret"
STRIPE_VECTOR_BODY = b'{"id":"evt_test_webhook","object":"event","type":"payment_intent.succeeded"}'
STRIPE_VECTOR_HEADER = ("t=1700000000,"
                        "v1=130dc37d5a27b1b232a61e4f2ff00ed245f498112c11e8b747aff3d0fb754056")
ADYEN_KEY_HEX = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
ADYEN_VECTOR_STRING = ("7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:"
                       "AUTHORISATION:true")
ADYEN_VECTOR_SIGNATURE = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0="
NOW_SECRET = "nowpayments-ipn-secret-for-tests"
T0 = 1_700_000_000


def _config(name: str, secret: str, **extra: Any) -> PspConfig:
    return PspConfig(name=name, base_url="http://127.0.0.1:9", api_key=f"{name}-api-key",
                     webhook_secret=secret, **extra)


STRIPE = StripeAdapter(_config("stripe", STRIPE_SECRET))
ADYEN = AdyenAdapter(_config("adyen", ADYEN_KEY_HEX, merchant_account="TestMerchant"))
NOWPAYMENTS = NowPaymentsAdapter(_config("nowpayments", NOW_SECRET))


def _cause(call: Any) -> str:
    with pytest.raises(WebhookRejected) as info:
        call()
    return info.value.cause


# --- Stripe ----------------------------------------------------------------------------------

def _stripe_event(event_type: str, obj: dict[str, Any], event_id: str = "evt_1") -> bytes:
    return orjson.dumps({"id": event_id, "object": "event", "type": event_type,
                         "api_version": "2024-06-20", "created": T0,
                         "data": {"object": obj}, "livemode": False})


def _stripe_read(body: bytes, *, now_s: int = T0, secret: str = STRIPE_SECRET,
                 header: str | None = None) -> list[PspEvent]:
    signed = header if header is not None else stripe.sign_header(secret, T0, body)
    return STRIPE.read_webhook({"Stripe-Signature": signed}, body, now_s=now_s)


def test_stripe_design_vector() -> None:
    """Stripe's documented vector is what sign_header writes and read_webhook accepts."""
    assert stripe.sign_header(STRIPE_SECRET, T0, STRIPE_VECTOR_BODY) == STRIPE_VECTOR_HEADER
    [event] = STRIPE.read_webhook({"stripe-signature": STRIPE_VECTOR_HEADER},
                                  STRIPE_VECTOR_BODY, now_s=T0)
    assert (event.event_key, event.kind, event.psp_event_type) == (
        "evt_test_webhook", EventKind.IGNORED, "payment_intent.succeeded")


def test_stripe_rejections() -> None:
    """unsigned, forged, stale (both ways), altered, truncated and garbled headers."""
    body = STRIPE_VECTOR_BODY
    assert _cause(lambda: STRIPE.read_webhook({}, body, now_s=T0)) == "unsigned"
    assert _cause(lambda: _stripe_read(body, secret="whsec_other")) == "signature"
    assert _cause(lambda: _stripe_read(body, now_s=T0 + 301)) == "stale"
    assert _cause(lambda: _stripe_read(body, now_s=T0 - 301)) == "stale"
    assert _stripe_read(body, now_s=T0 + 300)[0].event_key == "evt_test_webhook"
    altered = body.replace(b"evt_test_webhook", b"evt_test_webhooK")
    assert _cause(lambda: _stripe_read(altered, header=STRIPE_VECTOR_HEADER)) == "signature"
    truncated = body[:-5]
    assert _cause(lambda: _stripe_read(truncated)) == "malformed"
    not_event = b'{"id": 1}'
    assert _cause(lambda: _stripe_read(not_event)) == "malformed"
    for header in ("garbage", "t=abc,v1=00", "v1=00", "t=1700000000", "t=1,t=2,v1=00"):
        assert _cause(lambda h=header: _stripe_read(body, header=h)) == "malformed", header
    assert _cause(lambda: _stripe_read(body, header="t=1700000000,v1=é")) == "signature"


def test_stripe_rotation_any_v1_may_match() -> None:
    """During a secret roll Stripe sends several v1 values; one valid one is enough."""
    good = stripe.signature_v1(STRIPE_SECRET, T0, STRIPE_VECTOR_BODY)
    bad = stripe.signature_v1("whsec_old", T0, STRIPE_VECTOR_BODY)
    for header in (f"t={T0},v1={bad},v1={good}", f"t={T0},v1={good},v1={bad}",
                   f"t={T0},v0=ignored,v1={good}"):
        assert _stripe_read(STRIPE_VECTOR_BODY, header=header)[0].event_key == "evt_test_webhook"
    assert _cause(lambda: _stripe_read(STRIPE_VECTOR_BODY,
                                       header=f"t={T0},v1={bad},v1={bad}")) == "signature"


def test_stripe_official_library_agrees_both_ways() -> None:
    """stripe-python signs what we accept, and accepts what we sign."""
    now_s = int(time.time())
    payload = STRIPE_VECTOR_BODY.decode()
    theirs = stripe_lib.WebhookSignature.generate_signature_header(
        payload, STRIPE_SECRET, timestamp=now_s)
    assert theirs == stripe.sign_header(STRIPE_SECRET, now_s, STRIPE_VECTOR_BODY)
    assert STRIPE.read_webhook({"Stripe-Signature": theirs}, STRIPE_VECTOR_BODY, now_s=now_s)
    ours = stripe.sign_header(STRIPE_SECRET, now_s, STRIPE_VECTOR_BODY)
    event = stripe_lib.Webhook.construct_event(STRIPE_VECTOR_BODY, ours, STRIPE_SECRET,
                                               tolerance=300)
    assert event.id == "evt_test_webhook"
    with pytest.raises(stripe_lib.SignatureVerificationError):
        stripe_lib.Webhook.construct_event(
            STRIPE_VECTOR_BODY, stripe.sign_header("whsec_x", now_s, STRIPE_VECTOR_BODY),
            STRIPE_SECRET)


SESSION = {"id": "cs_test_1", "object": "checkout.session", "amount_total": 2500,
           "currency": "eur", "client_reference_id": "pay-1", "metadata": {"payment_id": "pay-1"},
           "payment_intent": "pi_1", "payment_status": "paid", "status": "complete"}
PAYOUT = {"id": "po_1", "object": "payout", "amount": 900, "currency": "usd",
          "metadata": {"payment_id": "pay-2"}, "status": "paid"}
DISPUTE = {"id": "dp_1", "object": "dispute", "amount": 2500, "currency": "eur",
           "charge": "ch_1", "payment_intent": "pi_1", "metadata": {}, "reason": "fraudulent"}


@pytest.mark.parametrize(("event_type", "obj", "kind", "expected"), [
    ("checkout.session.completed", SESSION, EventKind.DEPOSIT_SUCCEEDED,
     {"payment_id": "pay-1", "psp_reference": "cs_test_1", "psp_reference_alt": "pi_1",
      "amount_minor": 2500, "currency": "EUR"}),
    ("checkout.session.completed", {**SESSION, "payment_status": "unpaid"},
     EventKind.DEPOSIT_PENDING, {"payment_id": "pay-1"}),
    ("checkout.session.async_payment_succeeded", SESSION, EventKind.DEPOSIT_SUCCEEDED, {}),
    ("checkout.session.async_payment_failed", SESSION, EventKind.DEPOSIT_FAILED, {}),
    ("checkout.session.expired", {**SESSION, "metadata": {}, "payment_intent": None},
     EventKind.DEPOSIT_EXPIRED, {"payment_id": "pay-1", "psp_reference_alt": None}),
    ("payout.paid", PAYOUT, EventKind.PAYOUT_PAID,
     {"payment_id": "pay-2", "psp_reference": "po_1", "amount_minor": 900, "currency": "USD"}),
    ("payout.failed", PAYOUT, EventKind.PAYOUT_FAILED, {"psp_reference": "po_1"}),
    ("payout.canceled", PAYOUT, EventKind.PAYOUT_FAILED, {}),
    ("payout.created", PAYOUT, EventKind.IGNORED, {}),
    ("charge.dispute.created", DISPUTE, EventKind.CHARGEBACK,
     {"dispute_reference": "dp_1", "psp_reference": "pi_1", "amount_minor": 2500,
      "currency": "EUR", "payment_id": None}),
    ("customer.created", {"id": "cus_1"}, EventKind.IGNORED, {}),
])
def test_stripe_event_mapping(event_type: str, obj: dict[str, Any], kind: EventKind,
                              expected: dict[str, Any]) -> None:
    """Each Stripe event type becomes the right kind, with ids, amount and currency."""
    [event] = _stripe_read(_stripe_event(event_type, obj, "evt_map"))
    assert (event.kind, event.event_key, event.psp_event_type) == (kind, "evt_map", event_type)
    assert {k: getattr(event, k) for k in expected} == expected


def test_stripe_wrong_field_types_are_malformed() -> None:
    """A fractional or string amount is a malformed event, not a zero."""
    for bad in ({**SESSION, "amount_total": 25.5}, {**SESSION, "amount_total": "2500"},
                {**SESSION, "id": None}):
        body = _stripe_event("checkout.session.completed", bad)
        assert _cause(lambda b=body: _stripe_read(b)) == "malformed"


# --- Adyen -----------------------------------------------------------------------------------

VECTOR_ITEM: dict[str, Any] = {
    "amount": {"value": 1130, "currency": "EUR"}, "eventCode": "AUTHORISATION",
    "eventDate": "2024-01-01T00:00:00+01:00", "merchantAccountCode": "TestMerchant",
    "merchantReference": "TestPayment-1407325143704", "paymentMethod": "visa",
    "pspReference": "7914073381342284", "reason": "", "success": "true",
}
ADYEN_KEY = adyen.hmac_key_from_hex(ADYEN_KEY_HEX)


def _notification(*items: dict[str, Any]) -> bytes:
    return orjson.dumps({"live": "false", "notificationItems": [
        {"NotificationRequestItem": item} for item in items]})


def _item(**changes: Any) -> dict[str, Any]:
    return adyen.sign_item({**VECTOR_ITEM, **changes}, ADYEN_KEY)


def test_adyen_design_vector() -> None:
    """Adyen's documented signing string and signature; the signed item is accepted and
    acknowledged."""
    assert adyen.signing_string(VECTOR_ITEM) == ADYEN_VECTOR_STRING
    assert adyen.item_signature(VECTOR_ITEM, ADYEN_KEY) == ADYEN_VECTOR_SIGNATURE
    [event] = ADYEN.read_webhook({}, _notification(_item()), now_s=T0)
    assert (event.kind, event.event_key, event.payment_id, event.amount_minor,
            event.currency) == (EventKind.DEPOSIT_SUCCEEDED,
                                "7914073381342284:AUTHORISATION:true",
                                "TestPayment-1407325143704", 1130, "EUR")
    assert ADYEN.ack.status == 200 and ADYEN.ack.body == b"[accepted]"


def test_adyen_every_item_is_verified() -> None:
    """One forged or unsigned item among good ones rejects the whole request."""
    good = [_item(pspReference=f"88000000000000{i:02d}") for i in range(3)]
    assert len(ADYEN.read_webhook({}, _notification(*good), now_s=T0)) == 3
    forged = _item(pspReference="8800000000000099")
    forged["amount"] = {"value": 1, "currency": "EUR"}  # changed after signing
    assert _cause(lambda: ADYEN.read_webhook(
        {}, _notification(good[0], forged, good[1]), now_s=T0)) == "signature"
    unsigned = {**VECTOR_ITEM, "pspReference": "8800000000000098"}
    assert _cause(lambda: ADYEN.read_webhook(
        {}, _notification(good[0], unsigned), now_s=T0)) == "unsigned"
    other_key = adyen.sign_item(VECTOR_ITEM, b"\x01" * 32)
    assert _cause(lambda: ADYEN.read_webhook({}, _notification(other_key), now_s=T0)) == (
        "signature")


def test_adyen_item_for_another_merchant_account_is_not_applied() -> None:
    """Correctly signed, but about another merchant account of the company: recorded as an
    event we don't act on, never as a deposit."""
    [event] = ADYEN.read_webhook({}, _notification(_item(merchantAccountCode="OtherShop")),
                                 now_s=T0)
    assert event.kind is EventKind.IGNORED


def test_adyen_malformed() -> None:
    """Truncated JSON, no items, wrong shapes, and a non-boolean success are malformed."""
    body = _notification(_item())
    for bad in (body[:-3], b"[]", b'{"notificationItems": []}',
                b'{"notificationItems": [{"x": 1}]}',
                _notification(_item(success="maybe")),
                _notification(_item(amount={"value": "1130", "currency": "EUR"}))):
        assert _cause(lambda b=bad: ADYEN.read_webhook({}, b, now_s=T0)) == "malformed", bad


def test_adyen_official_library_agrees_both_ways() -> None:
    """Adyen's Python library signs what we accept and validates what we sign."""
    theirs = adyen_util.generate_notification_sig(VECTOR_ITEM, ADYEN_KEY_HEX).decode()
    assert theirs == adyen.item_signature(VECTOR_ITEM, ADYEN_KEY)
    lib_signed = {**VECTOR_ITEM, "additionalData": {"hmacSignature": theirs}}
    assert ADYEN.read_webhook({}, _notification(lib_signed), now_s=T0)
    ours = orjson.loads(_notification(_item(eventCode="CHARGEBACK",
                                            originalReference="7914073381342284")))
    assert adyen_util.is_valid_hmac_notification(copy.deepcopy(ours), ADYEN_KEY_HEX)
    tampered = copy.deepcopy(ours)
    tampered["notificationItems"][0]["NotificationRequestItem"]["amount"]["value"] = 1
    assert not adyen_util.is_valid_hmac_notification(tampered, ADYEN_KEY_HEX)


@pytest.mark.parametrize(("changes", "kind", "expected"), [
    ({"success": "false"}, EventKind.DEPOSIT_FAILED, {"psp_reference": "7914073381342284"}),
    ({"additionalData": {"paymentLinkId": "PL123"}}, EventKind.DEPOSIT_SUCCEEDED,
     {"psp_reference": "PL123", "psp_reference_alt": "7914073381342284"}),
    ({"eventCode": "CHARGEBACK", "pspReference": "9900000000000001",
      "originalReference": "7914073381342284"}, EventKind.CHARGEBACK,
     {"dispute_reference": "9900000000000001", "psp_reference": "7914073381342284",
      "event_key": "9900000000000001:CHARGEBACK:true"}),
    ({"eventCode": "PAYOUT_THIRDPARTY"}, EventKind.PAYOUT_PAID, {}),
    ({"eventCode": "PAYOUT_THIRDPARTY", "success": "false"}, EventKind.PAYOUT_FAILED,
     {"event_key": "7914073381342284:PAYOUT_THIRDPARTY:false"}),
    ({"eventCode": "PAYOUT_DECLINE"}, EventKind.PAYOUT_FAILED, {}),
    ({"eventCode": "PAYOUT_EXPIRE"}, EventKind.PAYOUT_FAILED, {}),
    ({"eventCode": "PAID_OUT_REVERSED", "pspReference": "9900000000000002",
      "originalReference": "7914073381342284"}, EventKind.PAYOUT_REVERSED,
     {"psp_reference": "7914073381342284"}),
    ({"eventCode": "REPORT_AVAILABLE"}, EventKind.IGNORED, {}),
])
def test_adyen_event_mapping(changes: dict[str, Any], kind: EventKind,
                             expected: dict[str, Any]) -> None:
    """Each eventCode/success pair becomes the right kind with the right references."""
    item = {**VECTOR_ITEM, **changes}
    [event] = ADYEN.read_webhook({}, _notification(adyen.sign_item(item, ADYEN_KEY)), now_s=T0)
    assert event.kind == kind
    assert {k: getattr(event, k) for k in expected} == expected


# --- NOWPayments -----------------------------------------------------------------------------

IPN = (b'{"payment_id":5077125051,"payment_status":"finished","pay_address":"bc1qsim",'
       b'"price_amount":15.0,"price_currency":"usd","pay_amount":0.00023077,'
       b'"actually_paid":0.00023077,"pay_currency":"btc","order_id":"pay-9",'
       b'"outcome_amount":1e-7,"invoice_id":null,"fee":{"depositFee":0,"currency":"btc"}}')
# What JSON.stringify(sortObject(JSON.parse(IPN))) writes, typed out by hand.
IPN_CANONICAL = (b'{"actually_paid":0.00023077,"fee":{"currency":"btc","depositFee":0},'
                 b'"invoice_id":null,"order_id":"pay-9","outcome_amount":1e-7,'
                 b'"pay_address":"bc1qsim","pay_amount":0.00023077,"pay_currency":"btc",'
                 b'"payment_id":5077125051,"payment_status":"finished","price_amount":15,'
                 b'"price_currency":"usd"}')


def _now_read(body: bytes, sig: str | None = None) -> list[PspEvent]:
    headers = {} if sig == "" else {
        "x-nowpayments-sig": sig if sig is not None else nowpayments.signature(NOW_SECRET, body)}
    return NOWPAYMENTS.read_webhook(headers, body, now_s=T0)


def test_nowpayments_canonical_form_and_signature() -> None:
    """Keys sorted, compact, numbers as JavaScript writes them (15.0 -> 15, 1e-7)."""
    assert nowpayments.canonical(IPN) == IPN_CANONICAL
    expected = hmac.new(NOW_SECRET.encode(), IPN_CANONICAL, hashlib.sha512).hexdigest()
    assert nowpayments.signature(NOW_SECRET, IPN) == expected
    [event] = _now_read(IPN, expected.upper())  # hex case doesn't matter
    assert (event.kind, event.event_key, event.payment_id, event.amount_minor,
            event.currency) == (EventKind.DEPOSIT_SUCCEEDED, "5077125051:finished", "pay-9",
                                1500, "USD")


def test_nowpayments_rejections() -> None:
    """unsigned, forged, altered after signing, truncated, and an unknown shape."""
    sig = nowpayments.signature(NOW_SECRET, IPN)
    assert _cause(lambda: _now_read(IPN, "")) == "unsigned"
    assert _cause(lambda: _now_read(IPN, nowpayments.signature("other", IPN))) == "signature"
    altered = IPN.replace(b'"price_amount":15.0', b'"price_amount":150')
    assert _cause(lambda: _now_read(altered, sig)) == "signature"
    assert _cause(lambda: _now_read(IPN[:-2], sig)) == "malformed"
    assert _cause(lambda: _now_read(b'{"hello": "world"}')) == "malformed"
    assert _cause(lambda: _now_read(b'{"payment_id": 1, "payment_status": "x", '
                                    b'"price_amount": NaN}', "00")) == "malformed"
    reordered = json.dumps(dict(reversed(list(json.loads(IPN).items())))).encode()
    assert _now_read(reordered, sig)[0].event_key == "5077125051:finished"


def _ipn(**changes: Any) -> bytes:
    doc = json.loads(IPN, parse_float=Decimal)
    doc.update(changes)
    return nowpayments.js_json(doc, sort_keys=False).encode()


@pytest.mark.parametrize(("status", "kind"), [
    ("waiting", EventKind.DEPOSIT_PENDING), ("confirming", EventKind.DEPOSIT_PENDING),
    ("confirmed", EventKind.DEPOSIT_PENDING), ("sending", EventKind.DEPOSIT_PENDING),
    ("finished", EventKind.DEPOSIT_SUCCEEDED), ("failed", EventKind.DEPOSIT_FAILED),
    ("refunded", EventKind.DEPOSIT_FAILED), ("expired", EventKind.DEPOSIT_EXPIRED),
    ("something_new", EventKind.IGNORED),
])
def test_nowpayments_payment_statuses(status: str, kind: EventKind) -> None:
    """Every payment_status maps to its kind; the key is payment_id:payment_status."""
    [event] = _now_read(_ipn(payment_status=status))
    assert (event.kind, event.event_key) == (kind, f"5077125051:{status}")


def test_nowpayments_partial_rounds_down() -> None:
    """received = price x actually_paid / pay_amount, rounded down to the minor unit."""
    body = _ipn(payment_status="partially_paid", price_amount=Decimal("10.00"),
                pay_amount=Decimal("0.0003"), actually_paid=Decimal("0.0001"))
    [event] = _now_read(body)
    assert (event.kind, event.amount_minor, event.received_minor) == (
        EventKind.DEPOSIT_PARTIAL, 1000, 333)
    half = _ipn(payment_status="partially_paid", price_amount=Decimal("0.03"),
                pay_amount=Decimal("2"), actually_paid=Decimal("1"))
    assert _now_read(half)[0].received_minor == 1  # 1.5 cents -> 1
    missing = _ipn(payment_status="partially_paid", actually_paid=None)
    assert _cause(lambda: _now_read(missing)) == "malformed"


def test_nowpayments_amounts_that_do_not_fit_are_malformed() -> None:
    """More decimals than the currency has, or an unknown currency: malformed, not rounded."""
    assert _cause(lambda: _now_read(_ipn(price_amount=Decimal("10.001")))) == "malformed"
    assert _cause(lambda: _now_read(_ipn(price_currency="xyz"))) == "malformed"
    assert _cause(lambda: _now_read(_ipn(price_amount=Decimal("1e30")))) == "malformed"


@pytest.mark.parametrize(("status", "kind"), [
    ("CREATING", EventKind.PAYOUT_PENDING), ("WAITING", EventKind.PAYOUT_PENDING),
    ("PROCESSING", EventKind.PAYOUT_PENDING), ("SENDING", EventKind.PAYOUT_PENDING),
    ("FINISHED", EventKind.PAYOUT_PAID), ("FAILED", EventKind.PAYOUT_FAILED),
    ("REJECTED", EventKind.PAYOUT_FAILED),
])
def test_nowpayments_payout_statuses(status: str, kind: EventKind) -> None:
    """Payout IPNs: status -> kind; crypto amount in the asset's minor units."""
    body = nowpayments.js_json({
        "id": "5000000713", "batch_withdrawal_id": "5000000000", "status": status,
        "error": None, "currency": "usdttrc20", "amount": "12.5", "address": "TXYZ",
        "unique_external_id": "pay-7"}, sort_keys=False).encode()
    [event] = _now_read(body)
    assert (event.kind, event.event_key, event.payment_id, event.psp_reference,
            event.amount_minor, event.currency) == (
        kind, f"payout:5000000713:{status.lower()}", "pay-7", "5000000713", 12_500_000, "USDT")


@pytest.mark.parametrize(("number", "text"), [
    (0.0, "0"), (-0.0, "0"), (1.0, "1"), (15, "15"), (0.1, "0.1"), (1e-7, "1e-7"),
    (1e-6, "0.000001"), (1.5e16, "15000000000000000"), (1e21, "1e+21"),
    (1.2345678901234567e23, "1.2345678901234567e+23"), (-2.5e-7, "-2.5e-7"),
    (Decimal("10.50"), "10.5"), (Decimal("100"), "100"), (Decimal("0.00000001"), "1e-8"),
])
def test_js_number(number: float | int | Decimal, text: str) -> None:
    """Number::toString of ECMA-262, for floats and for the simulator's Decimals."""
    assert nowpayments.js_number(number) == text


def test_base64_signature_shape() -> None:
    """Adyen signatures are standard base64 of a 32-byte digest."""
    assert len(base64.b64decode(adyen.item_signature(VECTOR_ITEM, ADYEN_KEY))) == 32
