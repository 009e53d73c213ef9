"""The webhooks Locust scenario runs headless for a few seconds against a bridge and the PSP
simulator: deposits created, completed at the simulator, settled by its signed webhooks,
hand-signed duplicates acknowledged and forgeries refused, thresholds passed, ledger clean.
Timings are not judged (see tests/wallet/integration/test_loadtests_smoke.py)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway_bridge.server import Running as BridgeRunning
from tests.bridge.conftest import API_KEY, PSP_ENV, Cashier
from tests.wallet.integration.test_loadtests_smoke import run_locust, stats_rows

RUN_S = 4


@pytest.mark.slow
async def test_webhooks_scenario_runs_headless_and_passes_its_thresholds(
        bridge: BridgeRunning, cashier: Cashier, bridge_port: int, sim: str, tmp_path: Path,
        ledger_clean: None) -> None:
    """Deposits settle through signed webhooks under load, and no check fails."""
    code, output = await run_locust("webhooks", host=f"http://127.0.0.1:{bridge_port}", env={
        "BRIDGE_API_KEYS": orjson.dumps({"cashier": API_KEY}).decode(), "SIM_URL": sim,
        "BRIDGE_STRIPE_WEBHOOK_SECRET": PSP_ENV["BRIDGE_STRIPE_WEBHOOK_SECRET"]},
        out=tmp_path, run_s=RUN_S)
    assert code == 0, output[-4000:]
    rows = stats_rows(tmp_path)
    assert int(rows["deposit settled"]["Request Count"]) > 0, output[-4000:]
    assert int(rows["deposit settled"]["Failure Count"]) == 0, output[-4000:]
