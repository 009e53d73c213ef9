"""PSP webhooks: verify on the raw body, store in the inbox, then acknowledge.

Nothing is acknowledged before it is stored: if the database is down the PSP gets a 503 and
delivers again later. Rejected requests are counted per (psp, cause) and logged without
body, headers or secrets, and change nothing else.
"""

from __future__ import annotations

import logging
import time

import asyncpg
from aiohttp import web

from gateway_bridge.http import errors as http_errors
from gateway_bridge.http.context import REQUEST_ID, SERVICES
from gateway_bridge.psp.base import WebhookRejected
from gateway_bridge.storage import repo

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
        try:
            async with services.pool.acquire() as conn:
                await repo.count_rejection(conn, psp, rejected.cause)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            pass  # the count is best effort; the rejection itself stands
        return http_errors.response(status, code, rejected.message, request_id=request_id)
    try:
        ids = await services.inbox.store(events, source="webhook")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as err:
        log.error("webhook not stored; asking the PSP to deliver again",
                  extra={"psp": psp, "error": type(err).__name__})
        return http_errors.response(503, "UNAVAILABLE", "not stored; deliver again later",
                                    request_id=request_id)
    log.info("webhook stored", extra={"psp": psp, "events": len(events),
                                      "duplicates": sum(1 for i in ids if i is None)})
    ack = adapter.ack
    return web.Response(status=ack.status, body=ack.body, content_type=ack.content_type)
