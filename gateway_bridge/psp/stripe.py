"""Stripe: Checkout Sessions for deposits (or a PaymentIntent confirmed with a stored card
when the bridge charges the card itself, refunded with /v1/refunds), Payouts for
withdrawals, signed Event webhooks.

Signature (docs/ARCHITECTURE.md, webhooks): `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`,
HMAC-SHA256 over `f"{t}.{raw_body}"` keyed by the whole `whsec_...` string; any v1 may match
(Stripe signs with the old and the new secret while one is being rolled); the timestamp must
be within `webhook_tolerance_s` of now. The signing helpers are module-level and pure so the
PSP simulator and the tests use the very same code.

Our payment id travels in `metadata[payment_id]` (and `client_reference_id` on sessions),
and Stripe echoes it in the events. A dispute carries no metadata of ours: it names the
payment intent, which the bridge learned as `psp_reference_alt` from checkout.session.*.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from urllib.parse import quote, urlencode

import orjson

from gateway_bridge.psp.base import (
    WEBHOOK_BODY_MAX_BYTES,
    ChargeOrder,
    DepositOrder,
    PaymentRef,
    PayoutOrder,
    PspConfig,
    PspDeclined,
    PspUnavailable,
    RefundOrder,
    RefundResult,
    ShapeError,
    WebhookAck,
    WebhookRejected,
    header_value,
    int_field,
    json_object,
    required_text,
    text_field,
)
from gateway_bridge.psp.declines import Decline, classify
from gateway_bridge.psp.outbound import ClientAdapter
from gateway_bridge.shared.events import EventKind, PspEvent
from gateway_bridge.shared.terms import DepositInstructions

SIGNATURE_HEADER = "Stripe-Signature"
# A real header is ~150 characters per secret; this allows a handful during rotation.
SIGNATURE_HEADER_MAX_CHARS = 2048
# v1 values compared per request; Stripe sends one per active endpoint secret.
SIGNATURES_MAX = 8

_SESSION_EVENTS: dict[str, EventKind] = {
    "checkout.session.async_payment_succeeded": EventKind.DEPOSIT_SUCCEEDED,
    "checkout.session.async_payment_failed": EventKind.DEPOSIT_FAILED,
    "checkout.session.expired": EventKind.DEPOSIT_EXPIRED,
}
# payout.failed after payout.paid is Stripe's way to report a reversal; the bridge's state
# machine makes it one, so here it is simply PAYOUT_FAILED.
_PAYOUT_EVENTS: dict[str, EventKind] = {
    "payout.paid": EventKind.PAYOUT_PAID,
    "payout.failed": EventKind.PAYOUT_FAILED,
    "payout.canceled": EventKind.PAYOUT_FAILED,
}
# A card payment the bridge charged itself (server-to-server). Its metadata says so
# (CHARGE_FLOW): the payment intents behind checkout sessions send these events too, and the
# session's own events already report those.
_INTENT_EVENTS: dict[str, EventKind] = {
    "payment_intent.succeeded": EventKind.DEPOSIT_SUCCEEDED,
    "payment_intent.payment_failed": EventKind.DEPOSIT_FAILED,
}
CHARGE_FLOW = "charge"
# The outcome of a refund that was `pending` when the bridge asked for it.
_REFUND_EVENTS = frozenset({"refund.updated", "refund.failed"})
_KNOWN_EVENTS = frozenset({"checkout.session.completed", "charge.dispute.created",
                           *_SESSION_EVENTS, *_PAYOUT_EVENTS, *_INTENT_EVENTS,
                           *_REFUND_EVENTS})


def signature_v1(secret: str, timestamp_s: int, body: bytes) -> str:
    signed = f"{timestamp_s}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign_header(secret: str, timestamp_s: int, body: bytes) -> str:
    """The `Stripe-Signature` value Stripe would send for this body at this time."""
    return f"t={timestamp_s},v1={signature_v1(secret, timestamp_s, body)}"


def _parse_header(header: str) -> tuple[int, list[str]]:
    if len(header) > SIGNATURE_HEADER_MAX_CHARS:
        raise WebhookRejected("malformed", "Stripe-Signature header too long")
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise WebhookRejected("malformed", "Stripe-Signature: expected key=value items")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or not timestamps[0].isdigit() or not signatures:
        raise WebhookRejected("malformed", "Stripe-Signature: needs one t= and a v1=")
    return int(timestamps[0]), signatures[:SIGNATURES_MAX]


def verify_header(header: str | None, body: bytes, *, secret: str, now_s: int,
                  tolerance_s: int) -> None:
    """Raises WebhookRejected (unsigned, malformed, signature, stale) unless `header` signs
    `body` with `secret` at a time within `tolerance_s` of `now_s`."""
    if not header:
        raise WebhookRejected("unsigned", "no Stripe-Signature header")
    timestamp_s, candidates = _parse_header(header)
    expected = signature_v1(secret, timestamp_s, body).encode()
    # Compare against every candidate (no early exit) so timing says nothing about which.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate.encode("ascii", "replace"))
    if not matched:
        raise WebhookRejected("signature", "no v1 signature matches")
    if abs(now_s - timestamp_s) > tolerance_s:
        raise WebhookRejected("stale", f"signed {now_s - timestamp_s} s ago, tolerance "
                                       f"{tolerance_s} s")


def _upper(value: str | None) -> str | None:
    return value.upper() if value is not None else None


def _metadata_payment_id(obj: Mapping[str, object]) -> str | None:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    return text_field(metadata, "payment_id")


def _charged_by_bridge(event: Mapping[str, object]) -> bool:
    """A payment intent the bridge created to charge a stored card (not a checkout's)."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    return isinstance(metadata, dict) and metadata.get("bridge_flow") == CHARGE_FLOW


def _expandable_id(obj: Mapping[str, object], key: str) -> str | None:
    """Stripe fields like payment_intent are an id, or the object itself when expanded."""
    value = obj.get(key)
    if isinstance(value, dict):
        return text_field(value, "id")
    return text_field(obj, key)


class StripeAdapter(ClientAdapter):
    """`PspAdapter` for Stripe. `config.webhook_secret` is the endpoint's `whsec_...`."""

    ack = WebhookAck(200, b'{"received":true}', "application/json")
    probe_path = "/v1/balance"  # Stripe's cheapest authenticated read
    supports_charges = True

    def __init__(self, config: PspConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not config.webhook_secret:
            raise ValueError(f"PSP {config.name!r} config: webhook_secret is empty")
        super().__init__(config, auth_headers={"Authorization": f"Bearer {config.api_key}"},
                         clock=clock)

    # --- webhooks ---------------------------------------------------------------------------

    def read_webhook(self, headers: Mapping[str, str], body: bytes, *,
                     now_s: int) -> list[PspEvent]:
        if len(body) > WEBHOOK_BODY_MAX_BYTES:
            raise WebhookRejected("malformed", "body too large")
        verify_header(header_value(headers, SIGNATURE_HEADER), body,
                      secret=self._config.webhook_secret, now_s=now_s,
                      tolerance_s=self._config.webhook_tolerance_s)
        try:
            return [self.event_from(orjson.loads(body))]
        except orjson.JSONDecodeError:
            raise WebhookRejected("malformed", "body is not JSON") from None
        except ShapeError as exc:
            raise WebhookRejected("malformed", str(exc)) from None

    def event_from(self, document: object) -> PspEvent:
        """Map one Stripe Event object; raises ShapeError when it isn't one."""
        event = json_object(document, "event")
        event_id = required_text(event, "id")
        event_type = required_text(event, "type")
        if event_type not in _KNOWN_EVENTS:
            # A valid event we have no use for; its shape is none of our business.
            return PspEvent(psp=self.name, event_key=event_id, kind=EventKind.IGNORED,
                            psp_event_type=event_type)
        if event_type in _INTENT_EVENTS and not _charged_by_bridge(event):
            return PspEvent(psp=self.name, event_key=event_id, kind=EventKind.IGNORED,
                            psp_event_type=event_type)
        obj = json_object(json_object(event.get("data"), "data").get("object"), "data.object")
        if event_type in _REFUND_EVENTS:
            return self._refund_event(obj, event_id, event_type)
        if event_type in _INTENT_EVENTS:
            return PspEvent(
                psp=self.name, event_key=event_id, kind=_INTENT_EVENTS[event_type],
                psp_event_type=event_type, payment_id=_metadata_payment_id(obj),
                psp_reference=required_text(obj, "id"),
                amount_minor=int_field(obj, "amount"),
                currency=_upper(text_field(obj, "currency")))
        if event_type == "checkout.session.completed":
            paid = obj.get("payment_status") == "paid"
            kind = EventKind.DEPOSIT_SUCCEEDED if paid else EventKind.DEPOSIT_PENDING
            return self._session_event(obj, event_id, event_type, kind)
        if event_type in _SESSION_EVENTS:
            return self._session_event(obj, event_id, event_type, _SESSION_EVENTS[event_type])
        if event_type in _PAYOUT_EVENTS:
            return self._payout_event(obj, event_id, event_type, _PAYOUT_EVENTS[event_type])
        # charge.dispute.created: the last of _KNOWN_EVENTS.
        return PspEvent(
            psp=self.name, event_key=event_id, kind=EventKind.CHARGEBACK,
            psp_event_type=event_type, payment_id=_metadata_payment_id(obj),
            psp_reference=_expandable_id(obj, "payment_intent"),
            dispute_reference=required_text(obj, "id"),
            amount_minor=int_field(obj, "amount"),
            currency=_upper(text_field(obj, "currency")))

    def _refund_event(self, refund: Mapping[str, object], event_key: str,
                      event_type: str) -> PspEvent:
        status = text_field(refund, "status") or ""
        if event_type == "refund.failed" or status in ("failed", "canceled"):
            kind = EventKind.REFUND_FAILED
        elif status == "succeeded":
            kind = EventKind.REFUND_SETTLED
        else:
            kind = EventKind.IGNORED  # still pending
        return PspEvent(
            psp=self.name, event_key=event_key, kind=kind, psp_event_type=event_type,
            payment_id=_metadata_payment_id(refund),
            psp_reference=_expandable_id(refund, "payment_intent"),
            psp_reference_alt=required_text(refund, "id"),
            amount_minor=int_field(refund, "amount"),
            currency=_upper(text_field(refund, "currency")))

    def _session_event(self, session: Mapping[str, object], event_key: str, event_type: str,
                       kind: EventKind) -> PspEvent:
        return PspEvent(
            psp=self.name, event_key=event_key, kind=kind, psp_event_type=event_type,
            payment_id=(_metadata_payment_id(session)
                        or text_field(session, "client_reference_id")),
            psp_reference=required_text(session, "id"),
            psp_reference_alt=_expandable_id(session, "payment_intent"),
            amount_minor=int_field(session, "amount_total"),
            currency=_upper(text_field(session, "currency")))

    def _payout_event(self, payout: Mapping[str, object], event_key: str, event_type: str,
                      kind: EventKind) -> PspEvent:
        return PspEvent(
            psp=self.name, event_key=event_key, kind=kind, psp_event_type=event_type,
            payment_id=_metadata_payment_id(payout),
            psp_reference=required_text(payout, "id"),
            amount_minor=int_field(payout, "amount"),
            currency=_upper(text_field(payout, "currency")))

    # --- outbound ---------------------------------------------------------------------------

    async def _post_form(self, path: str, fields: list[tuple[str, str]],
                         idempotency_key: str) -> dict[str, object]:
        response = await self.client.request(
            "POST", path, body=urlencode(fields).encode(),
            content_type="application/x-www-form-urlencoded", idempotency_key=idempotency_key)
        return self._object(response.json(self.name))

    async def _get(self, path: str) -> dict[str, object]:
        response = await self.client.request("GET", path)
        return self._object(response.json(self.name))

    def _object(self, data: object) -> dict[str, object]:
        try:
            obj = json_object(data, "response")
            required_text(obj, "id")
        except ShapeError as exc:
            raise PspUnavailable(self.name, f"unexpected answer: {exc}") from None
        return obj

    async def create_deposit(self, order: DepositOrder) -> DepositInstructions:
        fields = [
            ("mode", "payment"),
            ("client_reference_id", order.payment_id),
            ("line_items[0][quantity]", "1"),
            ("line_items[0][price_data][currency]", order.currency.lower()),
            ("line_items[0][price_data][unit_amount]", str(order.amount_minor)),
            ("line_items[0][price_data][product_data][name]", "Deposit"),
            ("metadata[payment_id]", order.payment_id),
            ("metadata[player_id]", order.player_id),
            ("payment_intent_data[metadata][payment_id]", order.payment_id),
        ]
        if order.return_url:
            fields.append(("success_url", order.return_url))
            fields.append(("cancel_url", order.return_url))
        session = await self._post_form("/v1/checkout/sessions", fields,
                                        f"deposit-{order.payment_id}")
        return DepositInstructions(psp_reference=str(session["id"]),
                                   checkout_url=text_field(session, "url") or "")

    async def create_payout(self, order: PayoutOrder) -> str:
        fields = [
            ("amount", str(order.amount_minor)),
            ("currency", order.currency.lower()),
            ("metadata[payment_id]", order.payment_id),
            ("metadata[player_id]", order.player_id),
        ]
        if order.destination:
            fields.append(("destination", order.destination))
        payout = await self._post_form("/v1/payouts", fields, f"payout-{order.payment_id}")
        return str(payout["id"])

    async def charge(self, order: ChargeOrder) -> str:
        """A PaymentIntent confirmed at once with the stored card (off session): Stripe
        answers 402 with a decline_code when the card is refused."""
        fields = [
            ("amount", str(order.amount_minor)),
            ("currency", order.currency.lower()),
            ("payment_method", order.payment_token),
            ("confirm", "true"),
            ("off_session", "true"),
            ("metadata[payment_id]", order.payment_id),
            ("metadata[player_id]", order.player_id),
            ("metadata[bridge_flow]", CHARGE_FLOW),
            ("metadata[method]", order.method),
        ]
        try:
            intent = await self._post_form("/v1/payment_intents", fields,
                                           order.idempotency_key)
        except PspDeclined as err:
            raise PspDeclined(self.name, err.message, status=err.status, code=err.code,
                              soft=classify(self.name, err.code) is Decline.SOFT) from None
        status = text_field(intent, "status") or ""
        if status != "succeeded":
            # processing: the outcome is coming (the webhook, or this key again).
            # requires_action (3-D Secure): the issuer wants the player, which a
            # server-to-server charge can't bring, so it is as good as unanswered.
            raise PspUnavailable(self.name, f"payment intent is {status or 'unknown'}",
                                 in_progress=status == "processing")
        return str(intent["id"])

    async def refund(self, order: RefundOrder) -> RefundResult:
        """A card refund is `succeeded` at once as a rule; `pending` settles later
        (refund.updated), `failed` or `canceled` is a refusal."""
        fields = [("payment_intent", order.psp_reference),
                  ("amount", str(order.amount_minor)),
                  ("metadata[payment_id]", order.payment_id)]
        refund = await self._post_form("/v1/refunds", fields, order.idempotency_key)
        status = text_field(refund, "status") or ""
        if status in ("failed", "canceled"):
            raise PspDeclined(self.name, f"refund {refund['id']} is {status}", status=200,
                              code=text_field(refund, "failure_reason") or status)
        return RefundResult(str(refund["id"]), settled=status == "succeeded")

    async def fetch_status(self, ref: PaymentRef) -> PspEvent | None:
        """A final status as a poll event; None while the session or payout is in flight."""
        ref_path = quote(ref.psp_reference, safe="")
        try:
            if ref.direction == "deposit":
                session = await self._get(f"/v1/checkout/sessions/{ref_path}")
                return self._session_status(session, ref.psp_reference)
            payout = await self._get(f"/v1/payouts/{ref_path}")
            return self._payout_status(payout, ref.psp_reference)
        except ShapeError as exc:
            raise PspUnavailable(self.name, f"unexpected answer: {exc}") from None

    def _session_status(self, session: Mapping[str, object], ref: str) -> PspEvent | None:
        status = text_field(session, "status") or ""
        paid = session.get("payment_status") == "paid"
        if status == "complete" and paid:
            kind = EventKind.DEPOSIT_SUCCEEDED
        elif status == "expired":
            kind = EventKind.DEPOSIT_EXPIRED
        else:
            # open, or complete but unpaid (an async method still settling): nothing final.
            return None
        return self._session_event(session, f"poll:{ref}:{status}", f"poll:session.{status}",
                                   kind)

    def _payout_status(self, payout: Mapping[str, object], ref: str) -> PspEvent | None:
        status = text_field(payout, "status") or ""
        kind = _PAYOUT_EVENTS.get(f"payout.{status}")
        if kind is None:
            return None  # pending, in_transit
        return self._payout_event(payout, f"poll:{ref}:{status}", f"poll:payout.{status}", kind)
