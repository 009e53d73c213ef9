"""Support's risk review endpoints:

    GET  /v1/risk/reviews                        held payments, oldest first
    POST /v1/risk/reviews/{payment_id}/approve   {"actor": "...", "reason": "..."}
    POST /v1/risk/reviews/{payment_id}/reject    {"actor": "...", "reason": "..."}

The review endpoints take a cashier API key whose client is listed in
BRIDGE_RISK_SUPPORT_CLIENTS; the stored actor is "<client>/<actor>".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway_bridge.http import cashier
from gateway_bridge.http.context import SERVICES
from gateway_bridge.http.errors import dumps
from gateway_bridge.payments.review import Reviews
from gateway_bridge.shared.errors import Forbidden, InvalidRequest

REVIEWS = web.AppKey("risk_reviews", Reviews)
PENDING_PAGE_MAX = 100


def _support_client(request: web.Request) -> str:
    """The caller's client name, if its key may decide reviews: checked before the body is
    read, so a caller without such a key learns nothing about what the endpoint accepts."""
    services = request.app[SERVICES]
    client = cashier.client_of(request, services)
    if client not in services.settings.risk_support_clients:
        raise Forbidden("Authorization: this API key may not decide risk reviews "
                        "(BRIDGE_RISK_SUPPORT_CLIENTS)", code="RISK_SUPPORT_ONLY")
    return client


def _decision(client: str, body: Mapping[str, Any]) -> tuple[str, str]:
    actor, reason = body.get("actor"), body.get("reason")
    if not isinstance(actor, str) or not actor:
        raise InvalidRequest("actor", "required: who decides")
    if not isinstance(reason, str) or not reason:
        raise InvalidRequest("reason", "required: why")
    return f"{client}/{actor}", reason


async def pending(request: web.Request) -> web.Response:
    _support_client(request)
    rows = await request.app[REVIEWS].pending(limit=PENDING_PAGE_MAX)
    return web.json_response({"reviews": rows}, dumps=dumps)


async def approve(request: web.Request) -> web.Response:
    client = _support_client(request)
    actor, reason = _decision(client, await cashier.json_body(request))
    payment = await request.app[REVIEWS].approve(request.match_info["payment_id"],
                                                 reason=reason, actor=actor)
    return web.json_response(cashier.payment_view(payment), dumps=dumps)


async def reject(request: web.Request) -> web.Response:
    client = _support_client(request)
    actor, reason = _decision(client, await cashier.json_body(request))
    payment = await request.app[REVIEWS].reject(request.match_info["payment_id"],
                                                reason=reason, actor=actor)
    return web.json_response(cashier.payment_view(payment), dumps=dumps)


def add_routes(app: web.Application, reviews: Reviews) -> None:
    app[REVIEWS] = reviews
    app.router.add_get("/v1/risk/reviews", pending)
    app.router.add_post("/v1/risk/reviews/{payment_id}/approve", approve)
    app.router.add_post("/v1/risk/reviews/{payment_id}/reject", reject)
