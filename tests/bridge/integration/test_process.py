"""The bridge as a process: SIGTERM stops it gracefully (service_kit.serving), exit code 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import orjson

from tests.bridge.conftest import Cashier, bridge_env
from wallet_core.server import Running as WalletRunning

READY_TIMEOUT_S = 20.0


async def test_sigterm_drains_and_exits_0_with_its_log_lines(
        bridge_db: str, server: WalletRunning, sim: str, bridge_port: int,
        cashier: Cashier) -> None:
    """SIGTERM after start-up: "gateway-bridge serving", then "shutting down" with the grace
    period, then "stopped", and exit code 0."""
    env = {**os.environ, **bridge_env(database_url=bridge_db, wallet_port=server.port,
                                      sim_url=sim, bridge_port=bridge_port,
                                      BRIDGE_LOG_LEVEL="INFO")}
    proc = subprocess.Popen([sys.executable, "-m", "gateway_bridge", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                try:
                    if (await cashier.request("GET", "/healthz"))[0] == 200:
                        break
                except OSError:
                    pass
                assert proc.poll() is None, "the bridge exited during start-up"
                await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        # The server's JSON logs go to stdout; stderr is for anything that is not a log.
        stdout, stderr = await asyncio.to_thread(proc.communicate, timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    lines = [orjson.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    server_lines = [line for line in lines if line["logger"] == "gateway_bridge.server"]
    assert [line["msg"] for line in server_lines] == [
        "gateway-bridge serving", "shutting down", "stopped"], server_lines
    assert server_lines[0]["port"] == bridge_port
    assert server_lines[1]["grace_ms"] == int(env["BRIDGE_SHUTDOWN_GRACE_MS"])
