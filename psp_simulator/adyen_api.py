"""The Adyen half of the simulator: Checkout v71 payment links, Payout v68 `/payout`
(JSON, `X-API-Key`), Adyen-shaped errors, and classic notifications whose items are signed
with `psp.adyen.sign_item`.

A paid link sends AUTHORISATION success=true (with `additionalData.paymentLinkId`); a
refused attempt AUTHORISATION success=false and the link stays active; an expired link sends
nothing at all (Adyen has no webhook for it: the bridge learns it by polling the link).
Payouts send PAYOUT_THIRDPARTY; a reversal adds PAID_OUT_REVERSED. Chargebacks are
CHARGEBACK items whose originalReference is the payment's pspReference.
"""

from __future__ import annotations

import hmac
import time
from datetime import UTC, datetime, timedelta

import orjson
from aiohttp import web

from gateway_bridge.psp.adyen import hmac_key_from_hex, sign_item
from psp_simulator.delivery import Webhook
from psp_simulator.state import (
    ControlError,
    DepositOutcome,
    SimObject,
    Simulator,
    iso_now,
    json_response,
)

NAME = "adyen"
PREFIX = "/adyen"
LINK_TTL = timedelta(hours=24)
# What the simulated issuers answer a card payment with (refusalReasonCode), and the
# refusalReason Adyen sends with each code.
SOFT_DECLINES = ("2", "4", "9")
HARD_DECLINES = ("12", "5", "20", "6")
_REASONS = {"2": "Refused", "4": "Acquirer Error", "9": "Issuer Unavailable",
            "12": "Not enough balance", "5": "Blocked Card", "20": "FRAUD",
            "6": "Expired Card"}
CHARGE_FLOW = "charge"

_ERROR_TYPES = {401: "security", 403: "security", 404: "validation", 422: "validation",
                409: "validation", 400: "validation"}


def _amount(value: object) -> tuple[int, str] | None:
    if not isinstance(value, dict):
        return None
    minor, currency = value.get("value"), value.get("currency")
    if isinstance(minor, bool) or not isinstance(minor, int) or minor <= 0:
        return None
    if not isinstance(currency, str) or len(currency) != 3:
        return None
    return minor, currency.upper()


class AdyenSim:
    name = NAME

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._api_key = sim.settings.adyen_api_key.encode()
        self._merchant = sim.settings.adyen_merchant_account
        self._hmac_key = hmac_key_from_hex(sim.settings.adyen_hmac_key)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(f"{PREFIX}/v71/paymentLinks", self.create_link),
            web.get(f"{PREFIX}/v71/paymentLinks/{{ref}}", self.get_link),
            web.post(f"{PREFIX}/v71/payments", self.create_payment),
            web.post(f"{PREFIX}/v71/payments/{{ref}}/refunds", self.create_refund),
            web.post(f"{PREFIX}/pal/servlet/Payout/v68/payout", self.create_payout),
        ]

    def authorized(self, request: web.Request) -> bool:
        return hmac.compare_digest(request.headers.get("X-API-Key", "").encode(), self._api_key)

    def error(self, status: int, code: str, message: str) -> web.Response:
        return json_response(status, {"status": status, "errorCode": code or "000",
                                      "message": message,
                                      "errorType": _ERROR_TYPES.get(status, "internal")})

    def idempotency_mismatch(self, key: str) -> web.Response:
        del key
        return self.error(422, "704", "request already processed or in progress")

    async def _payload(self, request: web.Request) -> dict[str, object] | web.Response:
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self.error(400, "702", "Structure of request is invalid")
        if not isinstance(payload, dict):
            return self.error(400, "702", "Structure of request is invalid")
        if payload.get("merchantAccount") != self._merchant:
            return self.error(403, "901", "Invalid Merchant Account")
        return payload

    # --- API -------------------------------------------------------------------------------

    async def create_link(self, request: web.Request) -> web.Response:
        payload = await self._payload(request)
        if isinstance(payload, web.Response):
            return payload
        amount = _amount(payload.get("amount"))
        reference = payload.get("reference")
        if amount is None or not isinstance(reference, str) or not reference:
            return self.error(422, "100", "Required field 'amount' or 'reference' is invalid")
        link_id = f"PL{self._sim.new_id().upper()}"
        obj = SimObject(
            psp=NAME, kind="deposit", psp_reference=link_id, payment_id=reference,
            amount_minor=amount[0], currency=amount[1], status="active",
            webhook_url=self._sim.webhook_url(NAME), created_s=int(time.time()),
            fields={"shopperReference": payload.get("shopperReference"),
                    "returnUrl": payload.get("returnUrl")})
        self._sim.add(obj)
        self._sim.created(obj, doomed=self._sim.roll(self._sim.knobs.decline_rate_for("adyen")))
        return json_response(201, self._link(obj))

    async def create_payment(self, request: web.Request) -> web.Response:
        """A card-on-file payment with a stored card, captured at once: Authorised or
        Refused (HTTP 200 either way), each followed by its AUTHORISATION notification."""
        payload = await self._payload(request)
        if isinstance(payload, web.Response):
            return payload
        amount = _amount(payload.get("amount"))
        reference = payload.get("reference")
        method = payload.get("paymentMethod")
        if amount is None or not isinstance(reference, str) or not reference \
                or not isinstance(method, dict) or not method.get("storedPaymentMethodId"):
            return self.error(422, "100", "Required field 'amount', 'reference' or "
                              "'paymentMethod.storedPaymentMethodId' is invalid")
        metadata = payload.get("metadata")
        bridge_method = metadata.get("method", "") if isinstance(metadata, dict) else ""
        psp_reference = self._sim.new_digits(16)
        obj = SimObject(
            psp=NAME, kind="deposit", psp_reference=psp_reference, payment_id=reference,
            amount_minor=amount[0], currency=amount[1], status="completed",
            webhook_url=self._sim.webhook_url(NAME), created_s=int(time.time()),
            fields={"flow": CHARGE_FLOW, "payment_psp_reference": psp_reference,
                    "shopperReference": payload.get("shopperReference")})
        code = self._sim.charge_decline(NAME, str(bridge_method), soft=SOFT_DECLINES,
                                        hard=HARD_DECLINES)
        if code is not None:
            reason = _REASONS.get(code, "Refused")
            obj.status = "refused"
            self._sim.add(obj)
            self._sim.deliver([self._notification(
                obj, event_code="AUTHORISATION", psp_reference=psp_reference, success=False,
                reason=reason)])
            return json_response(200, {"pspReference": psp_reference, "resultCode": "Refused",
                                       "refusalReason": reason,
                                       "refusalReasonCode": code,
                                       "merchantReference": reference})
        self._sim.add(obj)
        self._sim.deliver([self._notification(
            obj, event_code="AUTHORISATION", psp_reference=psp_reference, success=True,
            reason="074467:1111:03/2030", additional={"authCode": "074467"})])
        return json_response(200, {"pspReference": psp_reference, "resultCode": "Authorised",
                                   "amount": {"value": amount[0], "currency": amount[1]},
                                   "merchantReference": reference})

    async def create_refund(self, request: web.Request) -> web.Response:
        payload = await self._payload(request)
        if isinstance(payload, web.Response):
            return payload
        payment_reference = request.match_info["ref"]
        obj = self._sim.captured(NAME, "payment_psp_reference", payment_reference)
        if obj is None or obj.status in ("refused", "active", "expired"):
            return self.error(422, "167", "Original pspReference required for this operation")
        amount = _amount(payload.get("amount"))
        if amount is None or amount != (obj.amount_minor, obj.currency):
            return self.error(422, "137", "Invalid amount specified (only whole refunds are "
                              "simulated)")
        refund_reference = self._sim.new_digits(16)
        refunded = NAME not in self._sim.knobs.refund_fail_psps
        if refunded:
            obj.status = "refunded"
            obj.fields["refund_psp_reference"] = refund_reference
        self._sim.deliver([self._notification(
            obj, event_code="REFUND", psp_reference=refund_reference, success=refunded,
            original_reference=payment_reference,
            reason="" if refunded else "Refund declined by the acquirer")])
        return json_response(201, {
            "merchantAccount": self._merchant, "paymentPspReference": payment_reference,
            "pspReference": refund_reference, "reference": payload.get("reference"),
            "status": "received",
            "amount": {"value": amount[0], "currency": amount[1]}})

    async def get_link(self, request: web.Request) -> web.Response:
        obj = self._sim.objects.get((NAME, request.match_info["ref"]))
        if obj is None or obj.kind != "deposit":
            return self.error(404, "000", "Payment link not found")
        return json_response(200, self.view(obj))

    async def create_payout(self, request: web.Request) -> web.Response:
        payload = await self._payload(request)
        if isinstance(payload, web.Response):
            return payload
        amount = _amount(payload.get("amount"))
        reference = payload.get("reference")
        if amount is None or not isinstance(reference, str) or not reference:
            return self.error(422, "100", "Required field 'amount' or 'reference' is invalid")
        psp_reference = self._sim.new_digits(16)
        if self._sim.roll(self._sim.knobs.decline_rate_for("adyen")):
            # Adyen refuses with HTTP 200 and a Refused result, not with a 4xx.
            return json_response(200, {"pspReference": psp_reference, "resultCode": "Refused",
                                       "refusalReason": "Not enough balance"})
        obj = SimObject(
            psp=NAME, kind="payout", psp_reference=psp_reference, payment_id=reference,
            amount_minor=amount[0], currency=amount[1], status="received",
            webhook_url=self._sim.webhook_url(NAME), created_s=int(time.time()))
        self._sim.add(obj)
        self._sim.created(obj)
        return json_response(200, {"pspReference": psp_reference,
                                   "resultCode": "[payout-submit-received]"})

    # --- views -----------------------------------------------------------------------------

    def view(self, obj: SimObject) -> dict[str, object]:
        if obj.kind == "payout" or obj.fields.get("flow") == CHARGE_FLOW:
            return {"pspReference": obj.psp_reference, "reference": obj.payment_id,
                    "amount": {"value": obj.amount_minor, "currency": obj.currency},
                    "status": obj.status}
        data = self._link(obj)
        if self._sim.knobs.poll_status:
            data["status"] = self._sim.knobs.poll_status
        return data

    def _link(self, obj: SimObject) -> dict[str, object]:
        expires = datetime.fromtimestamp(obj.created_s, UTC) + LINK_TTL
        data: dict[str, object] = {
            "id": obj.psp_reference,
            "amount": {"currency": obj.currency, "value": obj.amount_minor},
            "expiresAt": expires.isoformat().replace("+00:00", "Z"),
            "merchantAccount": self._merchant, "reference": obj.payment_id,
            "reusable": False, "status": obj.status,
            "url": f"https://test.adyen.link/{obj.psp_reference}",
        }
        for key in ("shopperReference", "returnUrl"):
            if obj.fields.get(key):
                data[key] = obj.fields[key]
        return data

    # --- webhooks --------------------------------------------------------------------------

    @staticmethod
    def _headers(body: bytes, now_s: int) -> dict[str, str]:
        del body, now_s  # Adyen's signature is inside the body
        return {"Content-Type": "application/json"}

    def _notification(self, obj: SimObject, *, event_code: str, psp_reference: str,
                      success: bool, amount: tuple[int, str] | None = None,
                      original_reference: str = "", reason: str = "",
                      additional: dict[str, object] | None = None) -> Webhook:
        value, currency = amount or (obj.amount_minor, obj.currency)
        item: dict[str, object] = {
            "additionalData": dict(additional or {}),
            "amount": {"currency": currency, "value": value},
            "eventCode": event_code, "eventDate": iso_now(),
            "merchantAccountCode": self._merchant, "merchantReference": obj.payment_id,
            "paymentMethod": "visa", "pspReference": psp_reference, "reason": reason,
            "success": "true" if success else "false",
        }
        if original_reference:
            item["originalReference"] = original_reference
        body = orjson.dumps({"live": "false", "notificationItems": [
            {"NotificationRequestItem": sign_item(item, self._hmac_key)}]})
        return Webhook(psp=NAME, event_key=f"{psp_reference}:{event_code}:{item['success']}",
                       event_type=event_code, url=obj.webhook_url, body=body,
                       headers=self._headers)

    def deposit_webhooks(self, obj: SimObject, outcome: DepositOutcome) -> list[Webhook]:
        if obj.fields.get("flow") == CHARGE_FLOW:
            raise ControlError(409, "a card payment is final when it is created")
        if outcome.outcome == "partial":
            raise ControlError(400, "adyen has no partial payments (a crypto outcome)")
        if outcome.outcome == "expired":
            obj.status = "expired"
            return []
        payment_reference = self._sim.new_digits(16)
        succeeded = outcome.outcome == "succeeded"
        if succeeded:
            obj.status = "completed"
            obj.fields["payment_psp_reference"] = payment_reference
        amount = (outcome.amount_minor if outcome.amount_minor is not None else obj.amount_minor,
                  (outcome.currency or obj.currency).upper())
        return [self._notification(
            obj, event_code="AUTHORISATION", psp_reference=payment_reference,
            success=succeeded, amount=amount,
            reason="074467:1111:03/2030" if succeeded else "Refused",
            additional={"paymentLinkId": obj.psp_reference, "authCode": "074467"})]

    def payout_webhooks(self, obj: SimObject, outcome: str) -> list[Webhook]:
        paid = outcome in ("paid", "reversed")
        obj.status = "paid" if paid else "failed"
        webhooks = [self._notification(obj, event_code="PAYOUT_THIRDPARTY",
                                       psp_reference=obj.psp_reference, success=paid,
                                       reason="" if paid else "Insufficient balance")]
        if outcome == "reversed":
            obj.status = "reversed"
            webhooks.append(self._notification(
                obj, event_code="PAID_OUT_REVERSED", psp_reference=self._sim.new_digits(16),
                success=True, original_reference=obj.psp_reference, reason="Account closed"))
        return webhooks

    def chargeback_webhooks(self, obj: SimObject, amount_minor: int | None) -> list[Webhook]:
        payment_reference = obj.fields.get("payment_psp_reference")
        if not isinstance(payment_reference, str):
            raise ControlError(409, "only a paid payment link can be charged back")
        amount = (obj.amount_minor if amount_minor is None else amount_minor, obj.currency)
        return [self._notification(
            obj, event_code="CHARGEBACK", psp_reference=self._sim.new_digits(16), success=True,
            amount=amount, original_reference=payment_reference, reason="Fraudulent",
            additional={"chargebackReasonCode": "10.4", "chargebackSchemeCode": "visa"})]
