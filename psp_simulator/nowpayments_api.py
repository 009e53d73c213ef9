"""The NOWPayments half of the simulator: `/v1/payment` and `/v1/payout` (JSON,
`x-api-key`), NOWPayments-shaped errors, and IPNs signed with `psp.nowpayments.signature`.

Amounts are Decimals end to end: requests are parsed with the stdlib json into Decimal,
prices convert to the paid asset through a fixed rate table, and bodies are written with
`js_json` (numbers as JavaScript writes them), in the field order NOWPayments uses, so the
bridge's re-sorting is exercised. A paid deposit sends `confirming` then `finished`; a
partial one `partially_paid` with `actually_paid` = pay_amount x paid_fraction. Payouts send
SENDING then FINISHED; a "reversal" (crypto can't really be reversed) is FINISHED then FAILED.
"""

from __future__ import annotations

import hmac
import json
import time
from decimal import ROUND_DOWN, ROUND_UP, Decimal, InvalidOperation

from aiohttp import web

from gateway_bridge.psp.nowpayments import asset_currency, js_json, signature
from gateway_bridge.shared.money import AmountError, format_major, to_minor
from psp_simulator.delivery import Webhook
from psp_simulator.state import (
    ControlError,
    DepositOutcome,
    SimObject,
    Simulator,
    iso_now,
    json_response,
)

NAME = "nowpayments"
PREFIX = "/nowpayments"
# USD value of one unit of each currency the simulator quotes; fixed so tests can predict.
RATES_USD: dict[str, Decimal] = {
    "usd": Decimal("1"), "eur": Decimal("1.08"), "gbp": Decimal("1.27"),
    "cad": Decimal("0.73"), "brl": Decimal("0.18"), "jpy": Decimal("0.0067"),
    "kwd": Decimal("3.25"), "btc": Decimal("65000"), "eth": Decimal("3200"),
    "ltc": Decimal("80"), "trx": Decimal("0.12"), "usdttrc20": Decimal("1"),
    "usdterc20": Decimal("1"), "usdt": Decimal("1"), "usdc": Decimal("1"),
    "usdcerc20": Decimal("1"), "usdcsol": Decimal("1"),
}
CRYPTO_QUANTUM = Decimal("0.00000001")
# NOWPayments accepts batches of withdrawals; ours are one each, but bound what we parse.
WITHDRAWALS_MAX = 50


def _decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() and number > 0 else None


class NowPaymentsSim:
    name = NAME

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._api_key = sim.settings.nowpayments_api_key.encode()
        self._secret = sim.settings.nowpayments_ipn_secret

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(f"{PREFIX}/v1/payment", self.create_payment),
            web.get(f"{PREFIX}/v1/payment/{{ref}}", self.get_object),
            web.post(f"{PREFIX}/v1/payout", self.create_payout),
            web.get(f"{PREFIX}/v1/payout/{{ref}}", self.get_object),
        ]

    def authorized(self, request: web.Request) -> bool:
        return hmac.compare_digest(request.headers.get("x-api-key", "").encode(), self._api_key)

    def error(self, status: int, code: str, message: str) -> web.Response:
        return json_response(status, {"status": False, "statusCode": status,
                                      "code": code or "ERROR", "message": message})

    def idempotency_mismatch(self, key: str) -> web.Response:
        del key
        return self.error(400, "IDEMPOTENCY_KEY_REUSED",
                          "Idempotency-Key was used with a different request")

    @staticmethod
    def _answer(status: int, data: object) -> web.Response:
        return web.Response(status=status, body=js_json(data, sort_keys=False).encode(),
                            content_type="application/json")

    async def _payload(self, request: web.Request) -> dict[str, object] | None:
        try:
            payload = json.loads(await request.read(), parse_float=Decimal)
        except ValueError:
            return None
        return payload if isinstance(payload, dict) else None

    # --- API -------------------------------------------------------------------------------

    async def create_payment(self, request: web.Request) -> web.Response:
        payload = await self._payload(request)
        if payload is None:
            return self.error(400, "INVALID_REQUEST_PARAMS", "body must be a JSON object")
        price = _decimal(payload.get("price_amount"))
        price_currency = str(payload.get("price_currency", "")).lower()
        pay_currency = str(payload.get("pay_currency", "")).lower()
        if price is None or price_currency not in RATES_USD or pay_currency not in RATES_USD:
            return self.error(400, "INVALID_REQUEST_PARAMS",
                              "price_amount, price_currency and pay_currency are required")
        try:
            amount_minor = to_minor(price, asset_currency(price_currency))
        except AmountError as exc:
            return self.error(400, "INVALID_REQUEST_PARAMS", f"price_amount: {exc}")
        pay_amount = (price * RATES_USD[price_currency] / RATES_USD[pay_currency]).quantize(
            CRYPTO_QUANTUM, rounding=ROUND_UP)
        callback = payload.get("ipn_callback_url")
        obj = SimObject(
            psp=NAME, kind="deposit", psp_reference=self._sim.new_digits(10),
            payment_id=str(payload.get("order_id") or ""), amount_minor=amount_minor,
            currency=asset_currency(price_currency), status="waiting",
            webhook_url=callback if isinstance(callback, str) and callback
            else self._sim.webhook_url(NAME),
            created_s=int(time.time()),
            fields={"price_amount": price, "price_currency": price_currency,
                    "pay_currency": pay_currency, "pay_amount": pay_amount,
                    "actually_paid": Decimal(0), "pay_address": f"sim{self._sim.new_id()}",
                    "order_description": payload.get("order_description"),
                    "created_at": iso_now()})
        self._sim.add(obj)
        self._sim.created(obj, doomed=self._sim.roll(self._sim.knobs.decline_rate_for("nowpayments")))
        answer = {**self._payment(obj), "payment_id": obj.psp_reference,
                  "ipn_callback_url": obj.webhook_url, "network": pay_currency}
        return self._answer(201, answer)

    async def create_payout(self, request: web.Request) -> web.Response:
        payload = await self._payload(request)
        withdrawals = payload.get("withdrawals") if payload else None
        if not isinstance(withdrawals, list) or not 1 <= len(withdrawals) <= WITHDRAWALS_MAX:
            return self.error(400, "INVALID_REQUEST_PARAMS",
                              f"withdrawals: a list of 1..{WITHDRAWALS_MAX}")
        if self._sim.roll(self._sim.knobs.decline_rate_for("nowpayments")):
            return self.error(400, "BAD_CREATE_WITHDRAWAL_REQUEST", "Insufficient balance")
        batch_id = self._sim.new_digits(10)
        created: list[SimObject] = []
        for item in withdrawals:
            obj = self._withdrawal(item, batch_id, payload)
            if isinstance(obj, web.Response):
                return obj
            created.append(obj)
        for obj in created:
            self._sim.add(obj)
            self._sim.created(obj)
        return self._answer(200, {"id": batch_id,
                                  "withdrawals": [self._payout(obj) for obj in created]})

    def _withdrawal(self, item: object, batch_id: str,
                    payload: dict[str, object] | None) -> SimObject | web.Response:
        if not isinstance(item, dict):
            return self.error(400, "INVALID_REQUEST_PARAMS", "withdrawals[]: an object")
        amount = _decimal(item.get("amount"))
        code = str(item.get("currency", "")).lower()
        address = item.get("address")
        if amount is None or not code or not isinstance(address, str) or not address:
            return self.error(400, "INVALID_REQUEST_PARAMS",
                              "withdrawals[]: address, currency and amount are required")
        try:
            amount_minor = to_minor(amount, asset_currency(code))
        except AmountError as exc:
            return self.error(400, "INVALID_REQUEST_PARAMS", f"amount: {exc}")
        callback = item.get("ipn_callback_url") or (payload or {}).get("ipn_callback_url")
        return SimObject(
            psp=NAME, kind="payout", psp_reference=self._sim.new_digits(10),
            payment_id=str(item.get("unique_external_id") or ""), amount_minor=amount_minor,
            currency=asset_currency(code), status="WAITING",
            webhook_url=callback if isinstance(callback, str) and callback
            else self._sim.webhook_url(NAME),
            created_s=int(time.time()),
            fields={"batch_withdrawal_id": batch_id, "address": address, "currency": code,
                    "amount": amount, "created_at": iso_now(), "hash": None, "error": None})

    async def get_object(self, request: web.Request) -> web.Response:
        obj = self._sim.objects.get((NAME, request.match_info["ref"]))
        wanted = "payout" if "/payout/" in request.path else "deposit"
        if obj is None or obj.kind != wanted:
            return self.error(404, "NOT_FOUND", "not found")
        if wanted == "payout":
            return self._answer(200, {"id": obj.fields["batch_withdrawal_id"],
                                      "withdrawals": [self.view(obj)]})
        return self._answer(200, self.view(obj))

    # --- views -----------------------------------------------------------------------------

    def view(self, obj: SimObject) -> dict[str, object]:
        data = self._payment(obj) if obj.kind == "deposit" else self._payout(obj)
        if self._sim.knobs.poll_status:
            data["payment_status" if obj.kind == "deposit" else "status"] = (
                self._sim.knobs.poll_status)
        return data

    def _payment(self, obj: SimObject, *, price_amount: Decimal | None = None,
                 price_currency: str | None = None) -> dict[str, object]:
        f = obj.fields
        return {
            "payment_id": int(obj.psp_reference), "parent_payment_id": None,
            "invoice_id": None, "payment_status": obj.status, "pay_address": f["pay_address"],
            "payin_extra_id": None,
            "price_amount": f["price_amount"] if price_amount is None else price_amount,
            "price_currency": price_currency or f["price_currency"],
            "pay_amount": f["pay_amount"], "actually_paid": f["actually_paid"],
            "actually_paid_at_fiat": 0, "pay_currency": f["pay_currency"],
            "order_id": obj.payment_id or None, "order_description": f["order_description"],
            "purchase_id": f"{obj.psp_reference}0", "outcome_amount": f["actually_paid"],
            "outcome_currency": f["pay_currency"], "created_at": f["created_at"],
            "updated_at": iso_now(),
        }

    def _payout(self, obj: SimObject) -> dict[str, object]:
        f = obj.fields
        return {
            "id": obj.psp_reference, "batch_withdrawal_id": f["batch_withdrawal_id"],
            "status": obj.status, "error": f["error"], "currency": f["currency"],
            "amount": f"{f['amount']}", "address": f["address"], "extra_id": None,
            "hash": f["hash"], "ipn_callback_url": obj.webhook_url,
            "is_request_payouts": False, "payout_description": None,
            "unique_external_id": obj.payment_id or None, "created_at": f["created_at"],
            "requested_at": f["created_at"], "updated_at": iso_now(),
        }

    # --- webhooks --------------------------------------------------------------------------

    def _headers(self, body: bytes, now_s: int) -> dict[str, str]:
        del now_s
        return {"x-nowpayments-sig": signature(self._secret, body),
                "Content-Type": "application/json"}

    def _ipn(self, obj: SimObject, data: dict[str, object], event_key: str,
             status: str) -> Webhook:
        return Webhook(psp=NAME, event_key=event_key, event_type=status, url=obj.webhook_url,
                       body=js_json(data, sort_keys=False).encode(), headers=self._headers)

    def _payment_ipn(self, obj: SimObject, status: str, outcome: DepositOutcome) -> Webhook:
        obj.status = status
        price_amount = None
        if outcome.amount_minor is not None:
            currency = (outcome.currency or obj.currency).upper()
            price_amount = Decimal(format_major(outcome.amount_minor, currency))
        data = self._payment(obj, price_amount=price_amount,
                             price_currency=outcome.currency.lower() if outcome.currency
                             else None)
        return self._ipn(obj, data, f"{obj.psp_reference}:{status}", status)

    def deposit_webhooks(self, obj: SimObject, outcome: DepositOutcome) -> list[Webhook]:
        pay_amount = obj.fields["pay_amount"]
        assert isinstance(pay_amount, Decimal)
        if outcome.outcome == "succeeded":
            obj.fields["actually_paid"] = pay_amount
            return [self._payment_ipn(obj, "confirming", outcome),
                    self._payment_ipn(obj, "finished", outcome)]
        if outcome.outcome == "partial":
            if not 0 < outcome.paid_fraction < 1:
                raise ControlError(400, "paid_fraction: a decimal strictly between 0 and 1")
            obj.fields["actually_paid"] = (pay_amount * outcome.paid_fraction).quantize(
                CRYPTO_QUANTUM, rounding=ROUND_DOWN)
            return [self._payment_ipn(obj, "partially_paid", outcome)]
        return [self._payment_ipn(obj, outcome.outcome, outcome)]  # failed, expired

    def payout_webhooks(self, obj: SimObject, outcome: str) -> list[Webhook]:
        statuses = {"paid": ["SENDING", "FINISHED"], "failed": ["FAILED"],
                    "reversed": ["FINISHED", "FAILED"]}[outcome]
        webhooks: list[Webhook] = []
        for status in statuses:
            obj.status = status
            if status == "FINISHED":
                obj.fields["hash"] = f"0x{self._sim.new_id()}"
            if status == "FAILED":
                obj.fields["error"] = "Insufficient funds on the hot wallet"
            webhooks.append(self._ipn(obj, self._payout(obj),
                                      f"payout:{obj.psp_reference}:{status.lower()}",
                                      status))
        return webhooks

    def chargeback_webhooks(self, obj: SimObject, amount_minor: int | None) -> list[Webhook]:
        raise ControlError(400, "crypto payments have no chargebacks")
