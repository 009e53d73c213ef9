"""Prometheus metrics of the bridge, and the small aiohttp app that serves them on their own
port (BRIDGE_METRICS_ADDR), apart from the listener PSPs and the cashier reach.

Recorded at the edges that already see everything: the HTTP middleware (every request, by
route template so the label set stays bounded) and the webhook handler (every delivery, by
PSP and what became of it).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

HTTP_REQUESTS = Counter("bridge_http_requests", "HTTP requests answered, by route and status",
                        ["route", "status"])
HTTP_DURATION = Histogram("bridge_http_request_duration_seconds", "Time to answer a request",
                          ["route"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                              0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
# result: stored | duplicate | a rejection cause (bad_signature, stale, malformed, ...)
WEBHOOKS = Counter("bridge_webhooks", "Webhook deliveries, by PSP and what became of them",
                   ["psp", "result"])


def route_of(request: web.Request) -> str:
    """The matched route's template (/webhooks/{psp}), never the raw path: bounded labels."""
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    return resource.canonical if resource is not None else "unmatched"


async def _metrics(_: web.Request) -> web.Response:
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    return app
