"""PSP health probes against the simulator: up when each API answers and takes our key,
down when it is unavailable or refuses the key, with the gauges and the change logged."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import generate_latest

from gateway_bridge.probes import probe_all
from tests.bridge.conftest import BridgeFactory, Cashier
from tests.test_metrics_and_probes import sample


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
        with caplog.at_level(logging.WARNING, logger="gateway_bridge.probes"):
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
