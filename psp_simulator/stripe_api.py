"""The Stripe half of the simulator: Checkout Sessions and Payouts (form-encoded, Bearer
key), Stripe-shaped errors, and Event webhooks signed with `psp.stripe.sign_header`.

What completes a deposit: `checkout.session.completed` (payment_status paid); a failed one
is `completed` (unpaid) then `checkout.session.async_payment_failed`; an expired one is
`checkout.session.expired`. Payouts: `payout.paid` / `payout.failed`; a reversal is
`payout.paid` followed by `payout.failed`, as Stripe reports it.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping

import orjson
from aiohttp import web

from gateway_bridge.psp.stripe import sign_header
from psp_simulator.delivery import Webhook
from psp_simulator.state import (
    ControlError,
    DepositOutcome,
    SimObject,
    Simulator,
    json_response,
)

NAME = "stripe"
API_VERSION = "2024-06-20"
PREFIX = "/stripe"
# Stripe's own cap on metadata keys per object.
METADATA_KEYS_MAX = 50
SESSION_TTL_S = 86_400

# What the simulated issuers answer a charge with (the bridge's psp.declines sorts them).
SOFT_DECLINES = ("do_not_honor", "issuer_not_available", "processing_error", "generic_decline")
HARD_DECLINES = ("insufficient_funds", "stolen_card", "fraudulent", "expired_card")
CHARGE_FLOW = "charge"

_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                402: "card_error", 404: "invalid_request_error", 409: "idempotency_error"}


def _form_text(form: Mapping[str, object], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _metadata(form: Mapping[str, object], prefix: str = "metadata") -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in form.items():
        if key.startswith(f"{prefix}[") and key.endswith("]") and isinstance(value, str):
            if len(found) >= METADATA_KEYS_MAX:
                break
            found[key[len(prefix) + 1:-1]] = value
    return found


class StripeSim:
    name = NAME

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._authorization = f"Bearer {sim.settings.stripe_api_key}".encode()
        self._secret = sim.settings.stripe_webhook_secret

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(f"{PREFIX}/v1/checkout/sessions", self.create_session),
            web.get(f"{PREFIX}/v1/checkout/sessions/{{ref}}", self.get_object),
            web.post(f"{PREFIX}/v1/payment_intents", self.create_intent),
            web.post(f"{PREFIX}/v1/refunds", self.create_refund),
            web.post(f"{PREFIX}/v1/payouts", self.create_payout),
            web.get(f"{PREFIX}/v1/payouts/{{ref}}", self.get_object),
        ]

    def authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, self._authorization)

    def error(self, status: int, code: str, message: str, *, param: str = "") -> web.Response:
        error: dict[str, object] = {"type": _ERROR_TYPES.get(status, "api_error"),
                                    "message": message}
        if code:
            error["code"] = code
        if param:
            error["param"] = param
        return json_response(status, {"error": error})

    def idempotency_mismatch(self, key: str) -> web.Response:
        return json_response(400, {"error": {
            "type": "idempotency_error",
            "message": "Keys for idempotent requests can only be used with the same parameters "
                       f"they were first used with. Try using a key other than '{key}' if you "
                       "meant to execute a different request."}})

    # --- API -------------------------------------------------------------------------------

    async def create_session(self, request: web.Request) -> web.Response:
        form = await request.post()
        if _form_text(form, "mode") != "payment":
            return self.error(400, "parameter_invalid_string", "mode: only payment here",
                              param="mode")
        currency = _form_text(form, "line_items[0][price_data][currency]")
        unit = _form_text(form, "line_items[0][price_data][unit_amount]")
        quantity = _form_text(form, "line_items[0][quantity]") or "1"
        if not currency or not unit.isdigit() or not quantity.isdigit() or int(unit) <= 0:
            return self.error(400, "parameter_missing", "Missing required param: "
                              "line_items[0][price_data][unit_amount] or currency",
                              param="line_items")
        metadata = _metadata(form)
        session_id = f"cs_test_{self._sim.new_id()}"
        obj = SimObject(
            psp=NAME, kind="deposit", psp_reference=session_id,
            payment_id=metadata.get("payment_id") or _form_text(form, "client_reference_id"),
            amount_minor=int(unit) * int(quantity), currency=currency.upper(), status="open",
            webhook_url=self._sim.webhook_url(NAME), created_s=int(time.time()),
            fields={"payment_status": "unpaid", "payment_intent": None, "metadata": metadata,
                    "client_reference_id": _form_text(form, "client_reference_id") or None,
                    "success_url": _form_text(form, "success_url") or None})
        self._sim.add(obj)
        self._sim.created(obj, doomed=self._sim.roll(self._sim.knobs.decline_rate_for("stripe")))
        return json_response(200, self._session(obj))

    async def create_intent(self, request: web.Request) -> web.Response:
        """A PaymentIntent confirmed at once with a stored card (confirm=true), captured
        automatically: succeeded, or a 402 card_error with a decline_code. A success sends
        payment_intent.succeeded; a decline sends nothing (the bridge learns declines from
        the answer and does not subscribe to payment_intent.payment_failed)."""
        form = await request.post()
        amount, currency = _form_text(form, "amount"), _form_text(form, "currency")
        if missing := self._amount_missing(amount, currency):
            return missing
        if _form_text(form, "confirm") != "true" or not _form_text(form, "payment_method"):
            return self.error(400, "parameter_missing", "payment_method and confirm=true are "
                              "required here", param="payment_method")
        metadata = _metadata(form)
        intent_id = f"pi_{self._sim.new_id()}"
        decline = self._sim.charge_decline(NAME, metadata.get("method", ""),
                                           soft=SOFT_DECLINES, hard=HARD_DECLINES)
        if decline is not None:
            return json_response(402, {"error": {
                "type": "card_error", "code": "card_declined", "decline_code": decline,
                "message": "Your card was declined.",
                "payment_intent": {"id": intent_id, "object": "payment_intent",
                                   "status": "requires_payment_method"}}})
        obj = SimObject(
            psp=NAME, kind="deposit", psp_reference=intent_id,
            payment_id=metadata.get("payment_id", ""), amount_minor=int(amount),
            currency=currency.upper(), status="succeeded",
            webhook_url=self._sim.webhook_url(NAME), created_s=int(time.time()),
            fields={"flow": CHARGE_FLOW, "metadata": metadata, "payment_intent": intent_id,
                    "payment_status": "paid",
                    "payment_method": _form_text(form, "payment_method")})
        self._sim.add(obj)
        self._sim.deliver([self._event(obj, "payment_intent.succeeded", self._intent(obj))])
        return json_response(200, self._intent(obj))

    async def create_refund(self, request: web.Request) -> web.Response:
        form = await request.post()
        intent_id = _form_text(form, "payment_intent")
        obj = self._sim.captured(NAME, "payment_intent", intent_id)
        if obj is None:
            return self.error(404, "resource_missing",
                              f"No such payment_intent: '{intent_id}'", param="payment_intent")
        if obj.fields.get("refund_id"):
            return self.error(400, "charge_already_refunded",
                              f"Charge for {intent_id} has already been refunded.")
        amount = _form_text(form, "amount") or str(obj.amount_minor)
        if not amount.isdigit() or int(amount) != obj.amount_minor:
            return self.error(400, "amount_too_large", "Only whole refunds are simulated",
                              param="amount")
        refund_id = f"re_{self._sim.new_id()}"
        failed = NAME in self._sim.knobs.refund_fail_psps
        if not failed:
            obj.fields["refund_id"] = refund_id
            obj.status = "refunded"
        return json_response(200, {
            "id": refund_id, "object": "refund", "amount": obj.amount_minor,
            "currency": obj.currency.lower(), "payment_intent": intent_id,
            "metadata": _metadata(form), "status": "failed" if failed else "succeeded",
            "failure_reason": "expired_or_canceled_card" if failed else None})

    def _amount_missing(self, amount: str, currency: str) -> web.Response | None:
        """Stripe's answer to a payment or payout without a positive amount and currency."""
        if not amount.isdigit() or int(amount) <= 0 or not currency:
            return self.error(400, "parameter_missing", "Missing required param: amount",
                              param="amount")
        return None

    async def create_payout(self, request: web.Request) -> web.Response:
        form = await request.post()
        amount, currency = _form_text(form, "amount"), _form_text(form, "currency")
        if missing := self._amount_missing(amount, currency):
            return missing
        if self._sim.roll(self._sim.knobs.decline_rate_for("stripe")):
            return self.error(400, "balance_insufficient", "You have insufficient funds in "
                              "your Stripe account for this transfer.")
        metadata = _metadata(form)
        obj = SimObject(
            psp=NAME, kind="payout", psp_reference=f"po_{self._sim.new_id()}",
            payment_id=metadata.get("payment_id", ""), amount_minor=int(amount),
            currency=currency.upper(), status="pending",
            webhook_url=self._sim.webhook_url(NAME), created_s=int(time.time()),
            fields={"metadata": metadata,
                    "destination": _form_text(form, "destination") or None})
        self._sim.add(obj)
        self._sim.created(obj)
        return json_response(200, self._payout(obj))

    async def get_object(self, request: web.Request) -> web.Response:
        ref = request.match_info["ref"]
        obj = self._sim.objects.get((NAME, ref))
        wanted = "payout" if "/payouts/" in request.path else "deposit"
        if obj is None or obj.kind != wanted:
            noun = "payout" if wanted == "payout" else "checkout.session"
            return self.error(404, "resource_missing", f"No such {noun}: '{ref}'", param="id")
        return json_response(200, self.view(obj))

    # --- views -----------------------------------------------------------------------------

    def view(self, obj: SimObject) -> dict[str, object]:
        """What a status GET answers, with the `poll_status` knob applied."""
        if obj.fields.get("flow") == CHARGE_FLOW:
            return self._intent(obj)
        data = self._session(obj) if obj.kind == "deposit" else self._payout(obj)
        override = self._sim.knobs.poll_status
        if override:
            data["status"] = override
            if obj.kind == "deposit" and override == "complete":
                data["payment_status"] = "paid"
        return data

    def _session(self, obj: SimObject, *, amount_minor: int | None = None,
                 currency: str | None = None) -> dict[str, object]:
        amount = obj.amount_minor if amount_minor is None else amount_minor
        return {
            "id": obj.psp_reference, "object": "checkout.session",
            "amount_subtotal": amount, "amount_total": amount,
            "client_reference_id": obj.fields.get("client_reference_id"),
            "created": obj.created_s, "currency": (currency or obj.currency).lower(),
            "expires_at": obj.created_s + SESSION_TTL_S, "livemode": False,
            "metadata": obj.fields.get("metadata", {}), "mode": "payment",
            "payment_intent": obj.fields.get("payment_intent"),
            "payment_status": obj.fields.get("payment_status"), "status": obj.status,
            "success_url": obj.fields.get("success_url"),
            "url": (f"https://checkout.stripe.com/c/pay/{obj.psp_reference}"
                    if obj.status == "open" else None),
        }

    def _intent(self, obj: SimObject) -> dict[str, object]:
        return {
            "id": obj.psp_reference, "object": "payment_intent", "amount": obj.amount_minor,
            "amount_received": obj.amount_minor, "capture_method": "automatic",
            "created": obj.created_s, "currency": obj.currency.lower(), "livemode": False,
            "metadata": obj.fields.get("metadata", {}),
            "payment_method": obj.fields.get("payment_method"),
            "status": "succeeded", "latest_charge": f"ch_{obj.psp_reference[3:]}",
        }

    def _payout(self, obj: SimObject) -> dict[str, object]:
        return {
            "id": obj.psp_reference, "object": "payout", "amount": obj.amount_minor,
            "arrival_date": obj.created_s + 86_400, "automatic": False,
            "created": obj.created_s, "currency": obj.currency.lower(),
            "destination": obj.fields.get("destination"),
            "failure_code": obj.fields.get("failure_code"),
            "failure_message": obj.fields.get("failure_message"), "livemode": False,
            "metadata": obj.fields.get("metadata", {}), "method": "standard",
            "status": obj.status, "type": "bank_account",
        }

    # --- webhooks --------------------------------------------------------------------------

    def _headers(self, body: bytes, now_s: int) -> dict[str, str]:
        return {"Stripe-Signature": sign_header(self._secret, now_s, body),
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}

    def _event(self, obj: SimObject, event_type: str, data: dict[str, object]) -> Webhook:
        event_id = f"evt_{self._sim.new_id()}"
        event = {"id": event_id, "object": "event", "api_version": API_VERSION,
                 "created": int(time.time()), "data": {"object": data}, "livemode": False,
                 "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
                 "type": event_type}
        return Webhook(psp=NAME, event_key=event_id, event_type=event_type,
                       url=obj.webhook_url, body=orjson.dumps(event), headers=self._headers)

    def deposit_webhooks(self, obj: SimObject, outcome: DepositOutcome) -> list[Webhook]:
        if obj.fields.get("flow") == CHARGE_FLOW:
            raise ControlError(409, "a charge is final when it is created")
        if outcome.outcome == "partial":
            raise ControlError(400, "stripe has no partial payments (a crypto outcome)")
        if outcome.outcome == "expired":
            obj.status = "expired"
            return [self._event(obj, "checkout.session.expired", self._session(obj))]
        obj.status = "complete"
        if not obj.fields.get("payment_intent"):
            obj.fields["payment_intent"] = f"pi_{self._sim.new_id()}"
        paid = outcome.outcome == "succeeded"
        obj.fields["payment_status"] = "paid" if paid else "unpaid"
        session = self._session(obj, amount_minor=outcome.amount_minor,
                                currency=outcome.currency)
        completed = self._event(obj, "checkout.session.completed", session)
        if paid:
            return [completed]
        return [completed, self._event(obj, "checkout.session.async_payment_failed", session)]

    def payout_webhooks(self, obj: SimObject, outcome: str) -> list[Webhook]:
        webhooks: list[Webhook] = []
        if outcome in ("paid", "reversed"):
            obj.status = "paid"
            webhooks.append(self._event(obj, "payout.paid", self._payout(obj)))
        if outcome in ("failed", "reversed"):
            obj.status = "failed"
            obj.fields["failure_code"] = "account_closed"
            obj.fields["failure_message"] = "The bank account has been closed."
            webhooks.append(self._event(obj, "payout.failed", self._payout(obj)))
        return webhooks

    def chargeback_webhooks(self, obj: SimObject, amount_minor: int | None) -> list[Webhook]:
        payment_intent = obj.fields.get("payment_intent")
        if obj.fields.get("payment_status") != "paid" or not payment_intent:
            raise ControlError(409, "only a paid checkout session can be disputed")
        dispute = {
            "id": f"dp_{self._sim.new_id()}", "object": "dispute",
            "amount": obj.amount_minor if amount_minor is None else amount_minor,
            "balance_transactions": [], "charge": f"ch_{self._sim.new_id()}",
            "created": int(time.time()), "currency": obj.currency.lower(),
            "is_charge_refundable": False, "livemode": False, "metadata": {},
            "payment_intent": payment_intent, "reason": "fraudulent",
            "status": "needs_response",
        }
        return [self._event(obj, "charge.dispute.created", dispute)]
