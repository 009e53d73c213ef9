"""NOWPayments (crypto): payments for deposits, mass payouts for withdrawals, signed IPNs.

Signature (docs/ARCHITECTURE.md, webhooks): `x-nowpayments-sig` is the hex HMAC-SHA512,
keyed by the IPN secret, of the body re-serialized the way NOWPayments' own Node code does
it: `JSON.stringify` of the object with keys sorted, compact. So the body is parsed with the
stdlib json (numbers become IEEE doubles, exactly as in JavaScript) and written back with
JavaScript's number formatting (`15.0` -> `15`, `1e-7`, no `.0`); re-serializing the Decimal
parse instead would disagree with the signer on numbers like `15.0`. Amounts themselves are
read from a second parse with Decimal, never through a float.

There is no timestamp: redelivery of a signed IPN is always possible, which is why the inbox
dedupes on (payment_id, payment_status). Our payment id travels as `order_id` (payments)
and `unique_external_id` (payouts).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Any
from urllib.parse import quote

from gateway_bridge.psp.base import (
    WEBHOOK_BODY_MAX_BYTES,
    DepositOrder,
    PaymentRef,
    PayoutOrder,
    PspConfig,
    PspUnavailable,
    ShapeError,
    WebhookAck,
    WebhookRejected,
    header_value,
    json_object,
    required_text,
    text_field,
)
from gateway_bridge.psp.outbound import ClientAdapter
from gateway_bridge.shared.events import EventKind, PspEvent
from gateway_bridge.shared.money import AmountError, format_major, to_minor
from gateway_bridge.shared.terms import DepositInstructions

SIGNATURE_HEADER = "x-nowpayments-sig"
# NOWPayments asset codes name the network; the wallet keeps one currency per asset.
ASSET_CURRENCIES: dict[str, str] = {
    "btc": "BTC",
    "usdttrc20": "USDT", "usdterc20": "USDT", "usdtbsc": "USDT", "usdtsol": "USDT",
    "usdtmatic": "USDT",
    "usdc": "USDC", "usdcerc20": "USDC", "usdcsol": "USDC", "usdcmatic": "USDC",
    "usdcbsc": "USDC",
}

_PAYMENT_KINDS: dict[str, EventKind] = {
    "waiting": EventKind.DEPOSIT_PENDING,
    "confirming": EventKind.DEPOSIT_PENDING,
    "confirmed": EventKind.DEPOSIT_PENDING,
    "sending": EventKind.DEPOSIT_PENDING,
    "partially_paid": EventKind.DEPOSIT_PARTIAL,
    "finished": EventKind.DEPOSIT_SUCCEEDED,
    "failed": EventKind.DEPOSIT_FAILED,
    "refunded": EventKind.DEPOSIT_FAILED,
    "expired": EventKind.DEPOSIT_EXPIRED,
}
# Payout (withdrawal) statuses arrive upper-case (WAITING, FINISHED, ...); compared lowered.
_PAYOUT_KINDS: dict[str, EventKind] = {
    "creating": EventKind.PAYOUT_PENDING,
    "waiting": EventKind.PAYOUT_PENDING,
    "processing": EventKind.PAYOUT_PENDING,
    "sending": EventKind.PAYOUT_PENDING,
    "finished": EventKind.PAYOUT_PAID,
    "failed": EventKind.PAYOUT_FAILED,
    "rejected": EventKind.PAYOUT_FAILED,
}
_PENDING = frozenset({EventKind.DEPOSIT_PENDING, EventKind.PAYOUT_PENDING})


# --- the signature's canonical form ---------------------------------------------------------

def js_number(value: int | float | Decimal) -> str:
    """`String(x)` in JavaScript (ECMA-262 Number::toString) for a finite number."""
    if isinstance(value, int):
        return str(value)
    number = Decimal(repr(value)) if isinstance(value, float) else value
    if not number.is_finite():
        raise ValueError("JSON has no representation for NaN or Infinity")
    if number.is_zero():
        return "0"
    sign, digit_tuple, exponent = number.normalize().as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    digits = "".join(map(str, digit_tuple))
    k = len(digits)
    n = k + exponent  # position of the decimal point relative to the digits
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return ("-" if sign else "") + text


def js_json(value: object, *, sort_keys: bool) -> str:
    """`JSON.stringify` (compact) of parsed JSON; Decimals are written as numbers, which is
    how the simulator sends amounts without ever holding a float."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return js_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(js_json(v, sort_keys=sort_keys) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value) if sort_keys else list(value)
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:"
                              f"{js_json(value[k], sort_keys=sort_keys)}" for k in keys) + "}"
    raise TypeError(f"not JSON: {type(value).__name__}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(body: bytes, *, decimals: bool) -> object:
    """stdlib json: doubles like JavaScript for the signature, or Decimal for amounts."""
    try:
        if decimals:
            return json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ShapeError(f"body is not JSON ({type(exc).__name__})") from None


def canonical(body: bytes) -> bytes:
    """What NOWPayments signs: the body's JSON with sorted keys, compact."""
    try:
        return js_json(_loads(body, decimals=False), sort_keys=True).encode()
    except (RecursionError, UnicodeEncodeError) as exc:
        raise ShapeError(f"body cannot be re-serialized ({type(exc).__name__})") from None


def signature(secret: str, body: bytes) -> str:
    """The `x-nowpayments-sig` value for this body; raises ShapeError if it isn't JSON."""
    return hmac.new(secret.encode(), canonical(body), hashlib.sha512).hexdigest()


def verify(header: str | None, body: bytes, *, secret: str) -> None:
    if not header:
        raise WebhookRejected("unsigned", f"no {SIGNATURE_HEADER} header")
    try:
        expected = signature(secret, body)
    except ShapeError as exc:
        raise WebhookRejected("malformed", str(exc)) from None
    received = header.strip().lower().encode("ascii", "replace")
    if not hmac.compare_digest(expected.encode(), received):
        raise WebhookRejected("signature", f"{SIGNATURE_HEADER} mismatch")


# --- amounts ----------------------------------------------------------------------------------

def asset_currency(code: str) -> str:
    """Our currency for a NOWPayments currency code (`usd` -> USD, `usdttrc20` -> USDT)."""
    return ASSET_CURRENCIES.get(code.lower(), code.upper())


def _decimal(obj: Mapping[str, object], key: str) -> Decimal | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise ShapeError(f"{key}: expected a number")
    try:
        number = Decimal(value)
    except ArithmeticError:
        raise ShapeError(f"{key}: expected a number") from None
    if not number.is_finite() or number < 0:
        raise ShapeError(f"{key}: expected a finite, non-negative number")
    return number


def _minor(amount: Decimal | None, currency: str | None) -> int | None:
    if amount is None or currency is None:
        return None
    try:
        return to_minor(amount, currency)
    except AmountError as exc:
        raise ShapeError(f"amount: {exc}") from None


def _received_minor(obj: Mapping[str, object], price_minor: int | None) -> int:
    """What arrived, in minor units of the price currency: price x actually_paid / pay_amount,
    rounded down (we credit no fraction of a cent the player didn't send)."""
    actually_paid = _decimal(obj, "actually_paid")
    pay_amount = _decimal(obj, "pay_amount")
    if price_minor is None or actually_paid is None or not pay_amount:
        raise ShapeError("partially_paid needs price_amount, actually_paid and pay_amount")
    with localcontext() as ctx:
        ctx.prec = 60  # 19-digit minor amounts times 20-digit crypto amounts: exact enough
        received = (Decimal(price_minor) * actually_paid / pay_amount).to_integral_value(
            rounding=ROUND_FLOOR)
    return int(received)


# --- the adapter ----------------------------------------------------------------------------

class NowPaymentsAdapter(ClientAdapter):
    """`PspAdapter` for NOWPayments. `config.webhook_secret` is the IPN secret;
    `config.callback_url` is sent as ipn_callback_url on every payment and payout."""

    ack = WebhookAck(200, b"ok", "text/plain")
    probe_path = "/v1/status"  # NOWPayments' API status endpoint
    needs_pay_currency = True  # a crypto invoice is in one asset the player chose

    def __init__(self, config: PspConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not config.webhook_secret:
            raise ValueError(f"PSP {config.name!r} config: webhook_secret (IPN secret) is empty")
        super().__init__(config, auth_headers={"x-api-key": config.api_key}, clock=clock)

    # --- webhooks ---------------------------------------------------------------------------

    def read_webhook(self, headers: Mapping[str, str], body: bytes, *,
                     now_s: int) -> list[PspEvent]:
        del now_s  # IPNs carry no timestamp
        if len(body) > WEBHOOK_BODY_MAX_BYTES:
            raise WebhookRejected("malformed", "body too large")
        verify(header_value(headers, SIGNATURE_HEADER), body, secret=self._config.webhook_secret)
        try:
            document = json_object(_loads(body, decimals=True), "IPN")
            if "payment_status" in document:
                event = self.payment_event(document, key_prefix="")
            elif "batch_withdrawal_id" in document or "unique_external_id" in document:
                event = self.payout_event(document, key_prefix="payout:")
            else:
                raise ShapeError("neither a payment nor a payout IPN")
        except ShapeError as exc:
            raise WebhookRejected("malformed", str(exc)) from None
        return [event]

    def payment_event(self, doc: Mapping[str, object], *, key_prefix: str) -> PspEvent:
        """A payment IPN or GET /v1/payment answer (Decimal-parsed) as an event."""
        payment_ref = required_text(doc, "payment_id")
        status = required_text(doc, "payment_status")
        kind = _PAYMENT_KINDS.get(status, EventKind.IGNORED)
        price_currency = text_field(doc, "price_currency")
        currency = asset_currency(price_currency) if price_currency else None
        amount_minor = _minor(_decimal(doc, "price_amount"), currency)
        received = (_received_minor(doc, amount_minor)
                    if kind is EventKind.DEPOSIT_PARTIAL else None)
        return PspEvent(
            psp=self.name, event_key=f"{key_prefix}{payment_ref}:{status}", kind=kind,
            psp_event_type=status, payment_id=text_field(doc, "order_id"),
            psp_reference=payment_ref, amount_minor=amount_minor, currency=currency,
            received_minor=received)

    def payout_event(self, doc: Mapping[str, object], *, key_prefix: str) -> PspEvent:
        """A payout (withdrawal) IPN or status entry as an event; amounts are crypto."""
        withdrawal_ref = required_text(doc, "id")
        status = required_text(doc, "status").lower()
        code = text_field(doc, "currency")
        currency = asset_currency(code) if code else None
        return PspEvent(
            psp=self.name, event_key=f"{key_prefix}{withdrawal_ref}:{status}",
            kind=_PAYOUT_KINDS.get(status, EventKind.IGNORED), psp_event_type=status,
            payment_id=text_field(doc, "unique_external_id"), psp_reference=withdrawal_ref,
            amount_minor=_minor(_decimal(doc, "amount"), currency), currency=currency)

    # --- outbound ---------------------------------------------------------------------------

    async def _call(self, method: str, path: str, payload: object = None,
                    idempotency_key: str = "") -> object:
        body = None if payload is None else js_json(payload, sort_keys=False).encode()
        response = await self.client.request(
            method, path, body=body, content_type="application/json",
            idempotency_key=idempotency_key)
        return response.json(self.name, loads=lambda raw: _loads(raw, decimals=True))

    def _unexpected(self, exc: ShapeError) -> PspUnavailable:
        return PspUnavailable(self.name, f"unexpected answer: {exc}")

    async def create_deposit(self, order: DepositOrder) -> DepositInstructions:
        if not order.pay_currency:
            raise ValueError("a NOWPayments deposit needs pay_currency (e.g. btc)")
        payload: dict[str, object] = {
            "price_amount": Decimal(format_major(order.amount_minor, order.currency)),
            "price_currency": order.currency.lower(),
            "pay_currency": order.pay_currency.lower(),
            "order_id": order.payment_id,
            "order_description": f"deposit {order.payment_id}",
        }
        if self._config.callback_url:
            payload["ipn_callback_url"] = self._config.callback_url
        answer = await self._call("POST", "/v1/payment", payload, f"deposit-{order.payment_id}")
        try:
            payment = json_object(answer, "response")
            pay_amount = _decimal(payment, "pay_amount")
            return DepositInstructions(
                psp_reference=required_text(payment, "payment_id"),
                pay_address=text_field(payment, "pay_address") or "",
                pay_amount=f"{pay_amount:f}" if pay_amount is not None else "",
                pay_currency=text_field(payment, "pay_currency") or "")
        except ShapeError as exc:
            raise self._unexpected(exc) from None

    def _asset_code(self, order: PayoutOrder) -> str:
        """`method` may name the network asset (usdttrc20) of the order's currency."""
        method = order.method.lower()
        if ASSET_CURRENCIES.get(method) == order.currency.upper():
            return method
        return order.currency.lower()

    async def create_payout(self, order: PayoutOrder) -> str:
        withdrawal: dict[str, object] = {
            "address": order.destination,
            "currency": self._asset_code(order),
            "amount": Decimal(format_major(order.amount_minor, order.currency)),
            "unique_external_id": order.payment_id,
        }
        payload: dict[str, object] = {"withdrawals": [withdrawal]}
        if self._config.callback_url:
            withdrawal["ipn_callback_url"] = self._config.callback_url
            payload["ipn_callback_url"] = self._config.callback_url
        answer = await self._call("POST", "/v1/payout", payload, f"payout-{order.payment_id}")
        try:
            withdrawals = json_object(answer, "response").get("withdrawals")
            if not isinstance(withdrawals, list) or len(withdrawals) != 1:
                raise ShapeError("withdrawals: expected exactly one")
            return required_text(json_object(withdrawals[0], "withdrawal"), "id")
        except ShapeError as exc:
            raise self._unexpected(exc) from None

    async def fetch_status(self, ref: PaymentRef) -> PspEvent | None:
        ref_path = quote(ref.psp_reference, safe="")
        try:
            if ref.direction == "deposit":
                answer = await self._call("GET", f"/v1/payment/{ref_path}")
                event = self.payment_event(json_object(answer, "payment"), key_prefix="poll:")
            else:
                answer = await self._call("GET", f"/v1/payout/{ref_path}")
                event = self.payout_event(self._withdrawal(answer, ref.psp_reference),
                                          key_prefix="poll:")
        except ShapeError as exc:
            raise self._unexpected(exc) from None
        if event.kind in _PENDING or event.kind is EventKind.IGNORED:
            return None
        return event

    def _withdrawal(self, answer: object, withdrawal_ref: str) -> dict[str, object]:
        """GET /v1/payout/{id} answers the batch ({"id", "withdrawals": [...]}) or a bare
        list of withdrawals; pick ours."""
        items = answer.get("withdrawals") if isinstance(answer, dict) else answer
        if not isinstance(items, list):
            raise ShapeError("payout status: expected a list of withdrawals")
        for item in items[:100]:  # a batch of ours holds one withdrawal; bound the scan anyway
            withdrawal = json_object(item, "withdrawal")
            if text_field(withdrawal, "id") == withdrawal_ref:
                return withdrawal
        raise ShapeError(f"payout status: withdrawal {withdrawal_ref} not listed")
