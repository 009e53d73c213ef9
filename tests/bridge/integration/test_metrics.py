"""The bridge's Prometheus endpoint, on its own port: requests by route template and status,
webhook deliveries by PSP and what became of them."""

from __future__ import annotations

import time

import aiohttp
import asyncpg
from prometheus_client import generate_latest

from gateway_bridge.payments import gauges
from gateway_bridge.psp.stripe import sign_header
from tests.bridge.conftest import BridgeFactory, Cashier
from tests.bridge.integration.test_webhooks_and_api import SECRET, post_stripe, session_completed
from tests.wallet.integration.test_metrics_and_probes import sample


async def _scrape(port: int) -> str:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/metrics") as r:
        assert r.status == 200
        return await r.text()


async def test_bridge_metrics_count_webhooks_and_requests(
        make_bridge: BridgeFactory, cashier: Cashier, player: str) -> None:
    """One forged and one good delivery of the same event, then the good one again: one
    rejection by cause, one stored, one duplicate; requests labelled by route template."""
    async with make_bridge(BRIDGE_METRICS_ADDR="127.0.0.1:0") as run:
        assert run.metrics_port is not None
        created = await cashier.deposit(player, 20_00)
        body = session_completed(created, event_id=f"evt_metrics_{created['id']}")
        before = await _scrape(run.metrics_port)
        now = int(time.time())
        assert (await post_stripe(cashier, body, signature=f"t={now},v1={'0' * 64}"))[0] == 401
        for _ in range(2):
            assert (await post_stripe(cashier, body,
                                      signature=sign_header(SECRET, now, body)))[0] == 200
        after = await _scrape(run.metrics_port)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("bridge_webhooks_total", psp="stripe", result="signature") == 1
    assert delta("bridge_webhooks_total", psp="stripe", result="stored") == 1
    assert delta("bridge_webhooks_total", psp="stripe", result="duplicate") == 1
    assert delta("bridge_http_requests_total", route="/webhooks/{psp}", status="200") == 2
    assert delta("bridge_http_requests_total", route="/webhooks/{psp}", status="401") == 1
    assert delta("bridge_http_request_duration_seconds_count", route="/webhooks/{psp}") == 3
    assert f"/v1/payments/{created['id']}" not in after, "raw paths never become labels"


async def test_psp_calls_payments_and_inbox_are_measured(
        make_bridge: BridgeFactory, cashier: Cashier, player: str,
        bridge_conn: asyncpg.Connection) -> None:
    """A deposit's checkout call counts as one ok Stripe call; after a refresh the payment
    shows in the funnel by state, and its webhook, stored while no worker runs, shows as a
    pending inbox event with its age."""
    before = generate_latest().decode()
    async with make_bridge(workers=False):
        created = await cashier.deposit(player, 12_00)
        body = session_completed(created, event_id=f"evt_lag_{created['id']}")
        now = int(time.time())
        assert (await post_stripe(cashier, body,
                                  signature=sign_header(SECRET, now, body)))[0] == 200
        await gauges.refresh(bridge_conn)
        after = generate_latest().decode()
    assert sample(after, "bridge_psp_calls_total", psp="stripe", outcome="ok") - sample(
        before, "bridge_psp_calls_total", psp="stripe", outcome="ok") >= 1
    assert sample(after, "bridge_psp_circuit_open", psp="stripe") == 0
    assert sample(after, "bridge_payments", psp="stripe", direction="deposit",
                  state=created["state"]) >= 1
    assert sample(after, "bridge_inbox_events", psp="stripe", status="pending") >= 1
    assert sample(after, "bridge_inbox_oldest_pending_seconds", psp="stripe") >= 0
