"""PSP webhooks: verify on the raw body, store in the inbox, then acknowledge.

Nothing is acknowledged before it is stored: if the database is down the PSP gets a 503 and
delivers again later. Rejected requests are counted per (psp, cause) in memory (added to the
database in the background) and logged without body, headers or secrets, and change
nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from gateway_bridge import metrics
from gateway_bridge.http import errors as http_errors
from gateway_bridge.http.context import REQUEST_ID, SERVICES, Services
from gateway_bridge.psp.base import WebhookRejected
from service_kit import pg

log = logging.getLogger("gateway_bridge.webhooks")


async def receive(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    request_id: str = request[REQUEST_ID]
    psp = request.match_info["psp"]
    adapter = services.adapters.get(psp)
    if adapter is None:
        return http_errors.response(404, "NOT_FOUND", f"no webhook endpoint for {psp!r}",
                                    request_id=request_id)
    body = await request.read()
    try:
        events = adapter.read_webhook(request.headers, body, now_s=int(time.time()))
    except WebhookRejected as rejected:
        status, code = http_errors.WEBHOOK_REJECTIONS.get(rejected.cause,
                                                          (400, "WEBHOOK_MALFORMED"))
        log.warning("webhook rejected", extra={"psp": psp, "cause": rejected.cause,
                                               "remote": request.remote,
                                               "body_bytes": len(body)})
        services.rejected_total[(psp, rejected.cause)] += 1
        metrics.WEBHOOKS.labels(psp, rejected.cause).inc()
        services.rejected_unsaved[(psp, rejected.cause)] += 1
        return http_errors.response(status, code, rejected.message, request_id=request_id)
    try:
        ids = await services.inbox.store(events, source="webhook")
    except pg.DB_ERRORS as err:
        log.error("webhook not stored; asking the PSP to deliver again",
                  extra={"psp": psp, "error": type(err).__name__})
        return http_errors.response(503, "UNAVAILABLE", "not stored; deliver again later",
                                    request_id=request_id)
    duplicates = sum(1 for i in ids if i is None)
    metrics.WEBHOOKS.labels(psp, "stored").inc(len(ids) - duplicates)
    metrics.WEBHOOKS.labels(psp, "duplicate").inc(duplicates)
    log.info("webhook stored", extra={"psp": psp, "events": len(events),
                                      "duplicates": duplicates})
    ack = adapter.ack
    return web.Response(status=ack.status, body=ack.body, content_type=ack.content_type)


async def flush_rejections(services: Services) -> None:
    """Adds the rejections counted in memory to `bridge.webhook_rejections` (running totals)
    and to the current minute's counts the callback-error incident rule reads."""
    if not services.rejected_unsaved:
        return  # no connection taken: a flush runs every second on every replica
    pending = dict(services.rejected_unsaved)
    services.rejected_unsaved.clear()
    try:
        await services.rejections.save(pending)
    except pg.DB_ERRORS:
        services.rejected_unsaved.update(pending)  # kept for the next flush


async def flush_rejections_forever(services: Services, *, interval_ms: int) -> None:
    while True:
        await asyncio.sleep(interval_ms / 1000)
        await flush_rejections(services)
