"""Prometheus metrics of the bridge, and the small aiohttp app that serves them on their own
port (BRIDGE_METRICS_ADDR), apart from the listener PSPs and the cashier reach.

Recorded at the edges that already see everything: the HTTP middleware (every request, by
route template so the label set stays bounded) and the webhook handler (every delivery, by
PSP and what became of it).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

HTTP_REQUESTS = Counter("bridge_http_requests", "HTTP requests answered, by route and status",
                        ["route", "status"])
HTTP_DURATION = Histogram("bridge_http_request_duration_seconds", "Time to answer a request",
                          ["route"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                              0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
# result: stored | duplicate | a rejection cause (bad_signature, stale, malformed, ...)
WEBHOOKS = Counter("bridge_webhooks", "Webhook deliveries, by PSP and what became of them",
                   ["psp", "result"])


# Calls to the PSPs' APIs (retries included in one call), by what came of them.
PSP_CALLS = Counter("bridge_psp_calls", "Calls to a PSP's API, by outcome "
                    "(ok, declined, unavailable, circuit_open)", ["psp", "outcome"])
PSP_CALL_DURATION = Histogram("bridge_psp_call_duration_seconds",
                              "Time of a call to a PSP's API, retries included", ["psp"],
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                                       30.0))
PSP_CIRCUIT_OPEN = Gauge("bridge_psp_circuit_open", "1 while a PSP's circuit breaker is open",
                         ["psp"])
# Read from Postgres every BRIDGE_METRICS_REFRESH_MS (payments/gauges.py).
PAYMENTS = Gauge("bridge_payments", "Payments by PSP, direction and state",
                 ["psp", "direction", "state"])
PAYMENTS_ATTENTION = Gauge("bridge_payments_attention",
                           "Payments waiting for support, by PSP and why (mismatch, timeout, "
                           "partial, conflict, dead_letter, other)", ["psp", "attention"])
INBOX = Gauge("bridge_inbox_events", "Inbox events by PSP and status", ["psp", "status"])
INBOX_LAG = Gauge("bridge_inbox_oldest_pending_seconds",
                  "Age of the oldest event waiting to be applied, by PSP", ["psp"])
PSP_PROBE_UP = Gauge("bridge_psp_probe_up",
                     "1 when the last health probe of a PSP's API was answered (and took our "
                     "key), 0 when not", ["psp"])
PSP_PROBE_DURATION = Gauge("bridge_psp_probe_duration_seconds",
                           "How long the last health probe of a PSP's API took", ["psp"])
ROUTING_OUTCOMES = Counter("bridge_routing_outcomes", "Payment outcomes the router learned "
                           "from, by PSP and result (success, failure)", ["psp", "result"])
ROUTING_ATTEMPTS = Counter("bridge_routing_attempts", "Payments sent to a PSP by the router, by "
                           "PSP and kind (first, cascade)", ["psp", "kind"])
ROUTING_CASCADES = Counter("bridge_routing_cascades", "Deposits moved to the next PSP, by the "
                           "PSP left and why (unavailable, circuit_open, soft_decline)",
                           ["psp", "reason"])
ROUTING_REFUNDS = Counter("bridge_routing_refunds", "Refunds of captures at a PSP a payment "
                          "left, by PSP and state (refunded, failed)", ["psp", "state"])
REFRESH_FAILURES = Counter("bridge_metrics_refresh_failures",
                           "Refreshes of the database gauges that failed")
# Incidents (gateway_bridge/incidents): what the detector did, and the records still open.
INCIDENT_CHANGES = Counter("bridge_incident_changes", "Incidents opened, observed, cleared "
                           "or back, by rule", ["rule", "change"])
INCIDENT_EVALUATION_FAILURES = Counter("bridge_incident_evaluation_failures",
                                       "Evaluations of the incident rules that failed")
INCIDENTS_OPEN = Gauge("bridge_incidents_open", "Incidents not yet resolved, by rule and "
                       "stage", ["rule", "stage"])
# Compliance (docs/COMPLIANCE.md): AML cases opened by the rules; open cases and the age of
# the oldest, and KYC restrictions the wallet does not have yet (read from Postgres).
AML_CASES_OPENED = Counter("bridge_aml_cases_opened", "AML cases the rules opened, by rule",
                           ["rule"])
AML_CASES_OPEN = Gauge("bridge_aml_cases_open", "AML cases open or under investigation, by "
                       "rule and whether they hold withdrawals", ["rule", "holds"])
AML_CASE_OLDEST = Gauge("bridge_aml_case_oldest_open_seconds", "Age of the oldest AML case "
                        "not yet closed, by rule and whether it holds withdrawals",
                        ["rule", "holds"])
KYC_RESTRICTIONS_UNSENT = Gauge("bridge_kyc_restrictions_unsent", "Players whose KYC result "
                                "calls for a wallet restriction the wallet does not have yet")


def psp_call(psp: str, outcome: str, duration_s: float) -> None:
    PSP_CALLS.labels(psp, outcome).inc()
    PSP_CALL_DURATION.labels(psp).observe(duration_s)


def watch_breaker(psp: str, is_open: Callable[[], bool]) -> None:
    PSP_CIRCUIT_OPEN.labels(psp).set_function(lambda: 1.0 if is_open() else 0.0)


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
