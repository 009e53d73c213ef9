"""PSP health probes against the simulator: up when each API answers and takes our key,
down when it is unavailable or refuses the key, with the gauges and the change logged."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import generate_latest

from gateway_bridge.incidents.probes import probe_all
from tests.bridge.conftest import BridgeFactory, Cashier
from tests.wallet.integration.test_metrics_and_probes import sample


async def test_probes_see_each_psp_up_then_down(
        make_bridge: BridgeFactory, cashier: Cashier, caplog: pytest.LogCaptureFixture) -> None:
    """All three PSPs up; the simulator down: every probe down (503), the gauge reads 0 and
    the change is logged once per PSP; back up: up again."""
    async with make_bridge(workers=False) as run:
        adapters = run.services.adapters
        state: dict[str, bool] = {}
        first = await probe_all(adapters, state)
        assert {name: r.up for name, r in first.items()} == {
            "stripe": True, "adyen": True, "nowpayments": True}, first
        await cashier.knobs(down=True)
        with caplog.at_level(logging.WARNING, logger="gateway_bridge.incidents.probes"):
            down = await probe_all(adapters, state)
        assert all(not r.up and r.status == 503 for r in down.values()), down
        assert sum("psp down" in m for m in caplog.messages) == 3
        text = generate_latest().decode()
        assert sample(text, "bridge_psp_probe_up", psp="stripe") == 0
        await cashier.knobs(down=False)
        again = await probe_all(adapters, state)
        assert all(r.up for r in again.values())
        assert sample(generate_latest().decode(), "bridge_psp_probe_up", psp="adyen") == 1


async def test_a_refused_key_is_down(make_bridge: BridgeFactory, cashier: Cashier) -> None:
    """A PSP that answers 401 to our key is down for the probe: payments would fail too."""
    async with make_bridge(workers=False, BRIDGE_STRIPE_API_KEY="sk_test_wrong_0000") as run:
        result = (await probe_all(run.services.adapters))["stripe"]
    assert (result.up, result.status, result.reason) == (False, 401, "credentials refused")


async def test_a_bridge_with_metrics_probes_and_refreshes_on_its_own(
        make_bridge: BridgeFactory, cashier: Cashier, player: str) -> None:
    """With the metrics listener on, the probes and the database gauges run on their own
    schedule: a scrape soon shows every PSP probed and the new deposit in the funnel."""
    async with make_bridge(BRIDGE_METRICS_ADDR="127.0.0.1:0", BRIDGE_PROBE_INTERVAL_MS="1000",
                           BRIDGE_METRICS_REFRESH_MS="1000") as run:
        created = await cashier.deposit(player, 3_00)
        assert run.metrics_port is not None
        text = ""
        for _ in range(50):
            text = generate_latest().decode()
            if (sample(text, "bridge_psp_probe_up", psp="nowpayments") == 1
                    and sample(text, "bridge_payments", psp="stripe", direction="deposit",
                               state=created["state"]) >= 1):
                break
            await asyncio.sleep(0.1)
        assert sample(text, "bridge_psp_probe_up", psp="nowpayments") == 1, text[-2000:]
        assert sample(text, "bridge_payments", psp="stripe", direction="deposit",
                      state=created["state"]) >= 1
