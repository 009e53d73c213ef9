"""Each gRPC Locust scenario runs headless for a few seconds against the session's wallet and
passes: the scenario, the gRPC user, its interceptor and the thresholds work together, and
the ledger is clean afterwards.

Locust runs as a subprocess (its gevent monkey-patching must never reach pytest), awaited
asynchronously because the wallet it calls is served by this very event loop. Timings are
not judged (machines are noisy): the p99 threshold is set out of reach; failures, checks
and unhandled exceptions still fail the run.
"""

from __future__ import annotations

import asyncio
import csv
import os
import sys
import uuid
from pathlib import Path

import pytest

from tests.helpers import CALLERS_JSON
from wallet_core.server import Running

ROOT = Path(__file__).resolve().parents[3]
LOCUST = str(Path(sys.executable).with_name("locust"))
RUN_S = 3
USERS = 3
# Beyond the run time: Locust's start-up (~1-2 s), stopping users and writing the CSV.
SUBPROCESS_GRACE_S = 30
# What each scenario must have called for the run to count as having done its job.
SCENARIOS = {"game": "Bet", "bonus": "GrantBonus", "retry_storm": "Bet",
             "batch": "ExecuteBatch"}


async def run_locust(scenario: str, *, host: str, env: dict[str, str], out: Path,
                     users: int = USERS, run_s: int = RUN_S) -> tuple[int, str]:
    """Runs loadtests/locustfiles/<scenario>.py headless; (exit code, console output)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("WALLET_", "BRIDGE_"))}
    full_env.update({"LOADTEST_P99_MS_MAX": "600000", "LOADTEST_RUN_ID": uuid.uuid4().hex[:8],
                     **env})
    proc = await asyncio.create_subprocess_exec(
        LOCUST, "-f", str(ROOT / "loadtests" / "locustfiles" / f"{scenario}.py"), "--headless",
        "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{run_s}s",
        "--stop-timeout", "2", "--host", host, "--csv", str(out / "stats"), "--only-summary",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=full_env,
        cwd=ROOT)
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), run_s + SUBPROCESS_GRACE_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, output.decode(errors="replace")


def stats_rows(out: Path) -> dict[str, dict[str, str]]:
    """Locust's stats CSV by request name ("Aggregated" is the total)."""
    with (out / "stats_stats.csv").open() as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def callers_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("callers") / "callers.json"
    path.write_text(CALLERS_JSON)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_scenario_runs_headless_and_passes_its_thresholds(
        scenario: str, server: Running, callers_file: Path, tmp_path: Path,
        ledger_clean: None) -> None:
    """A short run makes requests, fails none of the thresholds, and leaves the ledger clean."""
    code, output = await run_locust(scenario, host=f"grpc://127.0.0.1:{server.port}", env={
        "WALLET_CALLERS_FILE": str(callers_file), "LOADTEST_PLAYERS": "50",
        "LOADTEST_BATCH_OPS": "20"}, out=tmp_path)
    if scenario == "batch" and "UNIMPLEMENTED to ExecuteBatch" in output:
        pytest.skip("the wallet does not serve ExecuteBatch yet")
    assert code == 0, output[-4000:]
    rows = stats_rows(tmp_path)
    assert int(rows["Aggregated"]["Request Count"]) > 0, output[-4000:]
    assert int(rows[SCENARIOS[scenario]]["Request Count"]) > 0, sorted(rows)
