"""The aiohttp application: routes, size limit, deadline, error mapping, access log.

Every answer is JSON with a stable error code; anything unexpected becomes a 500 carrying a
request id (logged with its traceback), never exception text.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway_bridge import metrics
from gateway_bridge.http import cashier, kyc, openapi, webhooks
from gateway_bridge.http import errors as http_errors
from gateway_bridge.http.context import REQUEST_ID, SERVICES, Services
from gateway_bridge.http.errors import dumps
from gateway_bridge.shared.errors import BridgeError
from service_kit import pg

log = logging.getLogger("gateway_bridge.http")
access_log = logging.getLogger("gateway_bridge.access")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Readiness answers within this, or says not ready.
READY_TIMEOUT_S = 1.0


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = secrets.token_hex(8)
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    services = request.app[SERVICES]
    status = 500
    try:
        limit = services.settings.body_size_max_bytes
        if request.content_length is not None and request.content_length > limit:
            response: web.StreamResponse = http_errors.response(
                413, "BODY_TOO_LARGE", f"body: at most {limit} bytes", request_id=request_id)
        else:
            async with asyncio.timeout(services.settings.request_timeout_ms / 1000):
                response = await handler(request)
    except BridgeError as err:
        response = http_errors.from_bridge_error(err, request_id=request_id)
    except web.HTTPRequestEntityTooLarge:
        response = http_errors.response(413, "BODY_TOO_LARGE", "body: too large",
                                        request_id=request_id)
    except web.HTTPException as exc:
        response = http_errors.response(exc.status, exc.reason.upper().replace(" ", "_"),
                                        exc.text or exc.reason, request_id=request_id)
    except TimeoutError:
        response = http_errors.response(503, "TIMEOUT", "the request took too long; retry "
                                        "with the same Idempotency-Key", request_id=request_id)
    except pg.DB_ERRORS as err:
        log.error("database unavailable", extra={"request_id": request_id,
                                                 "error": type(err).__name__})
        response = http_errors.response(503, "UNAVAILABLE", "storage unavailable; retry",
                                        request_id=request_id)
    except Exception:
        log.exception("unexpected error", extra={"request_id": request_id})
        response = http_errors.response(500, "INTERNAL", "internal error",
                                        request_id=request_id)
    status = response.status
    duration_s = time.perf_counter() - started
    route = metrics.route_of(request)
    metrics.HTTP_REQUESTS.labels(route, str(status)).inc()
    metrics.HTTP_DURATION.labels(route).observe(duration_s)
    access_log.info("http", extra={
        "request_id": request_id, "method": request.method, "path": request.path,
        "status": status, "duration_ms": round(duration_s * 1000, 2)})
    return response


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            inbox = await services.inbox.counts()
    except pg.DB_ERRORS:
        return web.json_response({"status": "unavailable", "database": "down"}, status=503)
    return web.json_response({
        "status": "ok", "inbox": inbox,
        "psps": {name: ("up" if a.available else "circuit_open")
                 for name, a in services.adapters.items()},
    }, dumps=dumps)


def build(services: Services) -> web.Application:
    # The size check in `edge` answers early on Content-Length; client_max_size also stops
    # chunked bodies that grow past the limit while they are read.
    app = web.Application(middlewares=[edge],
                          client_max_size=services.settings.body_size_max_bytes)
    app[SERVICES] = services
    app.router.add_post("/v1/deposits", cashier.create_deposit)
    app.router.add_post("/v1/withdrawals", cashier.create_withdrawal)
    app.router.add_get("/v1/payments/{payment_id}", cashier.get_payment)
    app.router.add_post("/webhooks/{psp}", webhooks.receive)
    kyc.add_routes(app)
    openapi.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
