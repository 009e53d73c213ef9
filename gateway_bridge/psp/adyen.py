"""Adyen: Pay by Link for deposits (or `/payments` with a stored card when the bridge charges
the card itself, refunded through `/payments/{pspReference}/refunds`), the classic Payout API
for withdrawals, and classic
(standard) webhooks: `{"live": ..., "notificationItems": [{"NotificationRequestItem": ...}]}`.

Signature (docs/ARCHITECTURE.md, webhooks): each item carries
`additionalData.hmacSignature`, the base64 HMAC-SHA256, keyed by the hex-decoded HMAC key, of
`pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`
(missing fields are empty, nothing escaped). Every item is verified before any is read: one
bad item rejects the whole request, so a forged item can't ride along with a genuine one.
Adyen expects the literal body `[accepted]` in the answer.

Identities: our payment id goes out as `reference` and comes back as `merchantReference`.
A deposit's reference with Adyen is the payment link id (`PL...`); the AUTHORISATION names
the link in `additionalData.paymentLinkId` and the payment's own pspReference, which the
bridge learns as `psp_reference_alt` (chargebacks later name it as `originalReference`).
A charged payment's reference is its pspReference itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from urllib.parse import quote

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
    int_field,
    json_object,
    required_text,
    text_field,
)
from gateway_bridge.psp.declines import Decline, classify, clean_code
from gateway_bridge.psp.outbound import ClientAdapter
from gateway_bridge.shared.events import EventKind, PspEvent
from gateway_bridge.shared.terms import DepositInstructions

# Adyen batches at most a few items per request; a bound keeps one request's HMAC work small.
NOTIFICATION_ITEMS_MAX = 100
CHECKOUT_API = "/v71"
PAYOUT_API = "/pal/servlet/Payout/v68"

SIGNED_FIELDS = ("pspReference", "originalReference", "merchantAccountCode",
                 "merchantReference", "value", "currency", "eventCode", "success")

# (eventCode, success) -> kind; a None success means either outcome.
_KINDS: dict[tuple[str, bool | None], EventKind] = {
    ("AUTHORISATION", True): EventKind.DEPOSIT_SUCCEEDED,
    ("AUTHORISATION", False): EventKind.DEPOSIT_FAILED,
    ("CHARGEBACK", None): EventKind.CHARGEBACK,
    ("PAYOUT_THIRDPARTY", True): EventKind.PAYOUT_PAID,
    ("PAYOUT_THIRDPARTY", False): EventKind.PAYOUT_FAILED,
    ("PAYOUT_DECLINE", None): EventKind.PAYOUT_FAILED,
    ("PAYOUT_EXPIRE", None): EventKind.PAYOUT_FAILED,
    ("PAID_OUT_REVERSED", None): EventKind.PAYOUT_REVERSED,
    ("REFUND", True): EventKind.REFUND_SETTLED,
    ("REFUND", False): EventKind.REFUND_FAILED,
    ("REFUND_FAILED", None): EventKind.REFUND_FAILED,
}
# Modifications whose pspReference is their own and whose originalReference is the payment's.
_MODIFICATIONS = frozenset({"CHARGEBACK", "PAID_OUT_REVERSED", "REFUND", "REFUND_FAILED"})
# Payment link statuses (GET /paymentLinks/{id}) that are final.
_LINK_KINDS = {"completed": EventKind.DEPOSIT_SUCCEEDED, "paid": EventKind.DEPOSIT_SUCCEEDED,
               "expired": EventKind.DEPOSIT_EXPIRED}


def hmac_key_from_hex(key_hex: str) -> bytes:
    try:
        key = binascii.unhexlify(key_hex)
    except (binascii.Error, ValueError):
        raise ValueError("Adyen HMAC key must be hex (as shown in the Customer Area)") from None
    if not key:
        raise ValueError("Adyen HMAC key is empty")
    return key


def _signed_value(item: Mapping[str, object], name: str) -> str:
    if name in ("value", "currency"):
        amount = item.get("amount")
        value = amount.get(name) if isinstance(amount, dict) else None
    else:
        value = item.get(name)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ShapeError(f"{name}: expected a string or an integer")
    return str(value)


def signing_string(item: Mapping[str, object]) -> str:
    """The colon-joined fields Adyen signs, in Adyen's order."""
    return ":".join(_signed_value(item, name) for name in SIGNED_FIELDS)


def item_signature(item: Mapping[str, object], key: bytes) -> str:
    digest = hmac.new(key, signing_string(item).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign_item(item: Mapping[str, object], key: bytes) -> dict[str, object]:
    """A copy of a NotificationRequestItem with `additionalData.hmacSignature` set."""
    signed = dict(item)
    additional = signed.get("additionalData")
    extra = dict(additional) if isinstance(additional, dict) else {}
    extra["hmacSignature"] = item_signature(item, key)
    signed["additionalData"] = extra
    return signed


def notification_items(document: object) -> list[dict[str, object]]:
    """The NotificationRequestItems of a notification; raises ShapeError on anything else."""
    body = json_object(document, "notification")
    wrappers = body.get("notificationItems")
    if not isinstance(wrappers, list) or not wrappers:
        raise ShapeError("notificationItems: expected a non-empty list")
    if len(wrappers) > NOTIFICATION_ITEMS_MAX:
        raise ShapeError(f"notificationItems: more than {NOTIFICATION_ITEMS_MAX}")
    return [json_object(json_object(w, "notificationItems[]").get("NotificationRequestItem"),
                        "NotificationRequestItem") for w in wrappers]


def verify_items(items: list[dict[str, object]], key: bytes) -> None:
    """Every item must carry a matching signature; raises WebhookRejected otherwise."""
    for index, item in enumerate(items):
        additional = item.get("additionalData")
        received = additional.get("hmacSignature") if isinstance(additional, dict) else None
        if not isinstance(received, str) or not received:
            raise WebhookRejected("unsigned", f"item {index}: no hmacSignature")
        try:
            expected = item_signature(item, key)
        except ShapeError as exc:
            raise WebhookRejected("malformed", f"item {index}: {exc}") from None
        if not hmac.compare_digest(expected.encode(), received.encode("ascii", "replace")):
            raise WebhookRejected("signature", f"item {index}: hmacSignature mismatch")


def _success(item: Mapping[str, object]) -> bool:
    value = item.get("success")
    if value not in ("true", "false"):
        raise ShapeError("success: expected \"true\" or \"false\"")
    return value == "true"


class AdyenAdapter(ClientAdapter):
    """`PspAdapter` for Adyen. `config.webhook_secret` is the HMAC key in hex;
    `config.merchant_account` is required."""

    ack = WebhookAck(200, b"[accepted]", "text/plain")
    # Checkout has no status endpoint: a lookup of a link that does not exist answers 404 (or
    # 422) when the API is up and takes our key, 401/403 when it does not.
    probe_path = "/v71/paymentLinks/PL-HEALTH-PROBE"
    supports_charges = True

    def __init__(self, config: PspConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not config.merchant_account:
            raise ValueError(f"PSP {config.name!r} config: merchant_account is empty")
        self._hmac_key = hmac_key_from_hex(config.webhook_secret)
        super().__init__(config, auth_headers={"X-API-Key": config.api_key}, clock=clock)

    # --- webhooks ---------------------------------------------------------------------------

    def read_webhook(self, headers: Mapping[str, str], body: bytes, *,
                     now_s: int) -> list[PspEvent]:
        """Adyen signs inside the body, so headers and time play no part here."""
        del headers, now_s
        if len(body) > WEBHOOK_BODY_MAX_BYTES:
            raise WebhookRejected("malformed", "body too large")
        try:
            items = notification_items(orjson.loads(body))
        except orjson.JSONDecodeError:
            raise WebhookRejected("malformed", "body is not JSON") from None
        except ShapeError as exc:
            raise WebhookRejected("malformed", str(exc)) from None
        verify_items(items, self._hmac_key)
        try:
            return [self.event_from(item) for item in items]
        except ShapeError as exc:
            raise WebhookRejected("malformed", str(exc)) from None

    def event_from(self, item: Mapping[str, object]) -> PspEvent:
        psp_reference = required_text(item, "pspReference")
        event_code = required_text(item, "eventCode")
        success = _success(item)
        kind = _KINDS.get((event_code, success)) or _KINDS.get((event_code, None),
                                                              EventKind.IGNORED)
        if text_field(item, "merchantAccountCode") != self._config.merchant_account:
            # Signed with our key but about another merchant account of the company: not
            # ours to apply (recorded, so a misrouted webhook setup shows in the inbox).
            kind = EventKind.IGNORED
        amount = item.get("amount")
        amount_obj = json_object(amount, "amount") if amount is not None else {}
        additional = item.get("additionalData")
        link_id = text_field(additional, "paymentLinkId") if isinstance(additional, dict) else None
        original = text_field(item, "originalReference")
        if event_code in ("REFUND", "REFUND_FAILED"):
            # The capture refunded, and the refund's own reference.
            reference, reference_alt = original or psp_reference, psp_reference
        elif event_code in _MODIFICATIONS:
            reference, reference_alt = original or psp_reference, None
        elif link_id:
            reference, reference_alt = link_id, psp_reference
        else:
            reference, reference_alt = psp_reference, None
        return PspEvent(
            psp=self.name, event_key=f"{psp_reference}:{event_code}:{str(success).lower()}",
            kind=kind, psp_event_type=event_code,
            payment_id=text_field(item, "merchantReference"),
            psp_reference=reference, psp_reference_alt=reference_alt,
            amount_minor=int_field(amount_obj, "value"),
            currency=(text_field(amount_obj, "currency") or "").upper() or None,
            dispute_reference=psp_reference if kind is EventKind.CHARGEBACK else None)

    # --- outbound ---------------------------------------------------------------------------

    async def _post(self, path: str, payload: Mapping[str, object],
                    idempotency_key: str) -> dict[str, object]:
        response = await self.client.request(
            "POST", path, body=orjson.dumps(payload), content_type="application/json",
            idempotency_key=idempotency_key)
        return self._object(response.json(self.name))

    def _object(self, data: object) -> dict[str, object]:
        try:
            return json_object(data, "response")
        except ShapeError as exc:
            raise PspUnavailable(self.name, f"unexpected answer: {exc}") from None

    def _amount(self, amount_minor: int, currency: str) -> dict[str, object]:
        return {"value": amount_minor, "currency": currency.upper()}

    async def create_deposit(self, order: DepositOrder) -> DepositInstructions:
        payload: dict[str, object] = {
            "reference": order.payment_id,
            "amount": self._amount(order.amount_minor, order.currency),
            "merchantAccount": self._config.merchant_account,
            "shopperReference": order.player_id,
        }
        if order.return_url:
            payload["returnUrl"] = order.return_url
        link = await self._post(f"{CHECKOUT_API}/paymentLinks", payload,
                                f"deposit-{order.payment_id}")
        try:
            return DepositInstructions(psp_reference=required_text(link, "id"),
                                       checkout_url=text_field(link, "url") or "")
        except ShapeError as exc:
            raise PspUnavailable(self.name, f"unexpected answer: {exc}") from None

    async def charge(self, order: ChargeOrder) -> str:
        """A card-on-file payment with the stored card; the merchant account captures
        authorisations at once. Adyen refuses with HTTP 200 and resultCode Refused, and says
        why in refusalReasonCode."""
        payload: dict[str, object] = {
            "reference": order.payment_id,
            "amount": self._amount(order.amount_minor, order.currency),
            "merchantAccount": self._config.merchant_account,
            "shopperReference": order.player_id,
            "paymentMethod": {"type": "scheme", "storedPaymentMethodId": order.payment_token},
            "shopperInteraction": "ContAuth",
            "recurringProcessingModel": "CardOnFile",
            "metadata": {"method": order.method},
        }
        answer = await self._post(f"{CHECKOUT_API}/payments", payload, order.idempotency_key)
        try:
            result_code = text_field(answer, "resultCode") or ""
            if result_code in ("Refused", "Error", "Cancelled"):
                code = clean_code(text_field(answer, "refusalReasonCode") or result_code)
                raise PspDeclined(self.name, text_field(answer, "refusalReason") or result_code,
                                  status=200, code=code,
                                  soft=classify(self.name, code) is Decline.SOFT)
            if result_code != "Authorised":
                # Pending, Received: the outcome is coming (the AUTHORISATION webhook).
                # RedirectShopper (3-D Secure): the issuer wants the player, which a
                # server-to-server charge can't bring, so it is as good as unanswered.
                raise PspUnavailable(self.name, f"payment is {result_code or 'unknown'}",
                                     in_progress=result_code in ("Pending", "Received"))
            return required_text(answer, "pspReference")
        except ShapeError as exc:
            raise PspUnavailable(self.name, f"unexpected answer: {exc}") from None

    async def refund(self, order: RefundOrder) -> RefundResult:
        """Adyen only accepts a refund here ("received"); the REFUND notification says
        whether it went through."""
        payload: dict[str, object] = {
            "merchantAccount": self._config.merchant_account,
            "amount": self._amount(order.amount_minor, order.currency),
            "reference": order.payment_id,
        }
        path = f"{CHECKOUT_API}/payments/{quote(order.psp_reference, safe='')}/refunds"
        answer = await self._post(path, payload, order.idempotency_key)
        try:
            return RefundResult(required_text(answer, "pspReference"), settled=False)
        except ShapeError as exc:
            raise PspUnavailable(self.name, f"unexpected answer: {exc}") from None

    async def create_payout(self, order: PayoutOrder) -> str:
        payload: dict[str, object] = {
            "reference": order.payment_id,
            "amount": self._amount(order.amount_minor, order.currency),
            "merchantAccount": self._config.merchant_account,
            "shopperReference": order.player_id,
            "selectedRecurringDetailReference": order.destination,
            "recurring": {"contract": "PAYOUT"},
            "shopperInteraction": "ContAuth",
        }
        answer = await self._post(f"{PAYOUT_API}/payout", payload, f"payout-{order.payment_id}")
        try:
            result_code = text_field(answer, "resultCode") or ""
            if result_code == "Refused":
                # Adyen refuses a payout with HTTP 200 and resultCode Refused: definitive.
                raise PspDeclined(self.name, text_field(answer, "refusalReason") or "Refused",
                                  status=200, code="Refused")
            return required_text(answer, "pspReference")
        except ShapeError as exc:
            raise PspUnavailable(self.name, f"unexpected answer: {exc}") from None

    async def fetch_status(self, ref: PaymentRef) -> PspEvent | None:
        """Payment link status for deposits; Adyen payouts have no status API: None."""
        if ref.direction != "deposit":
            return None
        response = await self.client.request(
            "GET", f"{CHECKOUT_API}/paymentLinks/{quote(ref.psp_reference, safe='')}")
        link = self._object(response.json(self.name))
        try:
            status = text_field(link, "status") or ""
            kind = _LINK_KINDS.get(status)
            if kind is None:
                return None  # active, paymentPending: nothing final yet
            amount = json_object(link.get("amount", {}), "amount")
            return PspEvent(
                psp=self.name, event_key=f"poll:{ref.psp_reference}:{status}", kind=kind,
                psp_event_type=f"poll:paymentLink.{status}",
                payment_id=text_field(link, "reference"), psp_reference=ref.psp_reference,
                amount_minor=int_field(amount, "value"),
                currency=(text_field(amount, "currency") or "").upper() or None)
        except ShapeError as exc:
            raise PspUnavailable(self.name, f"unexpected answer: {exc}") from None
