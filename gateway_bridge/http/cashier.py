"""Cashier REST: start deposits and withdrawals, read a payment with its history.

Authenticated by API key (`Authorization: Bearer <key>`); every POST needs an
`Idempotency-Key`, and a retry with the same key returns the same payment.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from gateway_bridge.http import validation as v
from gateway_bridge.http.context import REQUEST_ID, SERVICES, Services
from gateway_bridge.http.errors import STATUS_BY_ERROR, dumps
from gateway_bridge.payments import view
from gateway_bridge.payments.cashier import DepositCommand, WithdrawalCommand
from gateway_bridge.payments.model import Payment, PspRefund
from gateway_bridge.psp.nowpayments import asset_currency
from gateway_bridge.risk.rules import RiskDenied, Screening
from gateway_bridge.shared.errors import InvalidRequest, Unauthenticated

_INSTRUMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}")
_COUNTRY = re.compile(r"[A-Z]{2}")


def client_of(request: web.Request, services: Services) -> str:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise Unauthenticated("Authorization: a Bearer API key is required")
    client = services.clients_by_key_sha256.get(hashlib.sha256(key.encode()).digest())
    if client is None:
        raise Unauthenticated("Authorization: unknown API key")
    return client


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="Content-Type: application/json required")
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("body", "not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body", "a JSON object is required")
    return body


def _optional(body: Mapping[str, Any], field: str, pattern: re.Pattern[str],
              problem: str) -> str:
    value = body.get(field)
    if value is None:
        return ""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidRequest(field, problem)
    return value


def instrument_id(body: Mapping[str, Any]) -> str:
    return _optional(body, "instrument_id", _INSTRUMENT,
                     "the payment instrument (card fingerprint, crypto address, account id): "
                     "letters, digits and _ . : @ -, starting with a letter or digit, at "
                     "most 128")


def country(body: Mapping[str, Any]) -> str:
    return _optional(body, "country", _COUNTRY, "ISO 3166-1 alpha-2, upper case (e.g. DE)")


def risk_denied(request: web.Request, err: RiskDenied) -> web.Response:
    """RISK_DENIED with every reason and the payment id support finds the decision by."""
    status = next(s for cls, s in STATUS_BY_ERROR.items() if isinstance(err, cls))
    error = {"code": err.code, "message": err.message, "request_id": request[REQUEST_ID],
             "payment_id": err.payment_id, "reasons": [r.to_json() for r in err.reasons]}
    return web.json_response({"error": error}, status=status, dumps=dumps)


def payment_view(p: Payment, history: list[dict[str, Any]] | None = None, *,
                 screening: Screening | None = None,
                 refunds: Sequence[PspRefund] = ()) -> dict[str, Any]:
    """payments.view with the risk screening's reasons, when the rules said anything."""
    risk = screening.view() if screening is not None and screening.results else None
    return view.payment_view(p, history, risk=risk, refunds=refunds)


async def _reply(request: web.Request, p: Payment, *, created: bool,
                 accepted: bool = False) -> web.Response:
    """201 (deposit) / 202 (withdrawal) when created, 200 for a retry; 202 also for a
    deposit held for a risk review: stored, not sent to the PSP until support approves."""
    screening = await request.app[SERVICES].payments.screening(p.id)
    accepted = accepted or (screening is not None and screening.held)
    status = (202 if accepted else 201) if created else 200
    return web.json_response(payment_view(p, screening=screening), status=status,
                             dumps=dumps)


async def create_deposit(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    client = client_of(request, services)
    key = v.idempotency_key(request.headers)
    body = await json_body(request)
    psp = v.psp(body, services.adapters, routed=services.settings.routing.enabled)
    currency = v.currency(body)
    pay_currency = v.pay_currency(body, required=psp == "nowpayments")
    wallet_currency = v.wallet_currency(body, currency)
    if wallet_currency and pay_currency and asset_currency(pay_currency) != currency:
        # The PSP would convert a second time: the asset paid must be `currency` itself.
        raise InvalidRequest("pay_currency", f"must be an asset of {currency} (the currency "
                                             "paid) when wallet_currency is set")
    payment_token = v.payment_token(body)
    if payment_token and psp and not services.adapters[psp].supports_charges:
        raise InvalidRequest("payment_token", f"{psp} takes no stored cards; leave psp out "
                                              "or name a card PSP")
    command = DepositCommand(
        client=client, client_key=key, player_id=v.player_id(body),
        amount_minor=v.amount_minor(body), currency=currency, psp=psp,
        method=v.method(body), pay_currency=pay_currency,
        return_url=v.return_url(body), instrument_id=instrument_id(body),
        country=country(body), wallet_currency=wallet_currency, payment_token=payment_token)
    try:
        payment, created = await services.payments.create_deposit(command)
    except RiskDenied as err:
        return risk_denied(request, err)
    return await _reply(request, payment, created=created)


async def create_withdrawal(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    client = client_of(request, services)
    key = v.idempotency_key(request.headers)
    body = await json_body(request)
    command = WithdrawalCommand(
        client=client, client_key=key, player_id=v.player_id(body),
        amount_minor=v.amount_minor(body), currency=v.currency(body),
        psp=v.psp(body, services.adapters, routed=services.settings.routing.enabled),
        method=v.method(body),
        destination=v.destination(body), instrument_id=instrument_id(body),
        country=country(body))
    try:
        payment, created = await services.payments.create_withdrawal(command)
    except RiskDenied as err:
        return risk_denied(request, err)
    return await _reply(request, payment, created=created, accepted=True)


async def get_payment(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    client = client_of(request, services)
    payment, history, refunds = await services.payments.with_refunds(
        request.match_info["payment_id"], client=client)
    screening = await services.payments.screening(payment.id)
    return web.json_response(payment_view(payment, history, screening=screening,
                                          refunds=refunds), dumps=dumps)
