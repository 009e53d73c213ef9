"""What operators scrape and probe: the wallet's Prometheus endpoint counts RPCs by method and
status, replays and group-commit batches, and shows the pool; `wallet-core health` answers
container health checks from the gRPC health service."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import Client, key
from wallet_core import config
from wallet_core.server import SERVICE_NAME, running


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        return str(r.read().decode())


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value (0 when absent: counters with a new label set start there)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        metric, _, value = line.rpartition(" ")
        if metric.split("{")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', metric))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


async def test_wallet_metrics_count_what_happened(
        custom_settings: Callable[..., config.Settings], player: str) -> None:
    """A bet, its replay and a bad request move exactly their counters; the group-commit
    histogram and the pool gauges are there."""
    settings = custom_settings(listen_addr="127.0.0.1:0", metrics_addr="127.0.0.1:0")
    async with running(settings) as run, \
            grpc.aio.insecure_channel(f"127.0.0.1:{run.port}") as channel:
        assert run.metrics_port is not None
        client = Client(channel)
        await client.funded(player, 5_00)
        before = await asyncio.to_thread(scrape, run.metrics_port)
        idem = key("m")
        await client.bet(player, 1_00, idem=idem)
        await client.bet(player, 1_00, idem=idem)  # replay
        with pytest.raises(grpc.aio.AioRpcError):
            await client.bet(player, -5)
        after = await asyncio.to_thread(scrape, run.metrics_port)
    ok = "wallet_rpc_requests_total"
    assert sample(after, ok, method="Bet", code="OK") - sample(
        before, ok, method="Bet", code="OK") == 2
    assert sample(after, ok, method="Bet", code="INVALID_ARGUMENT") - sample(
        before, ok, method="Bet", code="INVALID_ARGUMENT") == 1
    assert sample(after, "wallet_replays_total") - sample(before, "wallet_replays_total") == 1
    assert sample(after, "wallet_rpc_duration_seconds_count", method="Bet") - sample(
        before, "wallet_rpc_duration_seconds_count", method="Bet") == 3
    assert sample(after, "wallet_group_commit_batch_size_count") > sample(
        before, "wallet_group_commit_batch_size_count")
    assert sample(after, "wallet_db_pool_connections", state="idle") >= 1
    assert sample(after, "wallet_redis_available") == 1


def test_bad_metrics_address_is_named() -> None:
    """WALLET_METRICS_ADDR without a port is refused at start-up, by name."""
    with pytest.raises(config.SettingsError, match="WALLET_METRICS_ADDR"):
        config.load({"DATABASE_URL": "postgresql://x/y", "WALLET_CALLERS": "{}",
                     "WALLET_METRICS_ADDR": "localhost"})


def health(addr: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wallet_core", "health", "--addr", addr],
                          capture_output=True, text=True, timeout=30, check=False)


async def test_health_command_says_serving_or_fails(
        custom_settings: Callable[..., config.Settings]) -> None:
    """Exit 0 and SERVING against a running wallet; exit 1 against a port nobody serves."""
    async with running(custom_settings(listen_addr="127.0.0.1:0")) as run:
        up = await asyncio.to_thread(health, f"127.0.0.1:{run.port}")
        port = run.port
    assert up.returncode == 0, up.stderr
    assert "SERVING" in up.stdout
    down = await asyncio.to_thread(health, f"127.0.0.1:{port}")
    assert down.returncode == 1
    assert "UNAVAILABLE" in down.stderr


async def test_health_command_sees_draining_server(
        custom_settings: Callable[..., config.Settings]) -> None:
    """A server entering its graceful shutdown answers NOT_SERVING: the probe fails, so the
    orchestrator stops sending it traffic before it stops."""
    async with running(custom_settings(listen_addr="127.0.0.1:0")) as run:
        await run.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        draining = await asyncio.to_thread(health, f"127.0.0.1:{run.port}")
    assert draining.returncode == 1
    assert "NOT_SERVING" in draining.stdout


async def test_health_watch_streams_do_not_hold_the_server(
        custom_settings: Callable[..., config.Settings]) -> None:
    """Twenty unauthenticated Watch streams, opened and dropped: the wallet still answers and
    then shuts down within its grace period (no thread of its loop's executor is left parked
    in a stream)."""
    settings = custom_settings(listen_addr="127.0.0.1:0", shutdown_grace_ms=1000)
    async with asyncio.timeout(20):
        async with running(settings) as run, \
                grpc.aio.insecure_channel(f"127.0.0.1:{run.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            streams = [stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
                       for _ in range(20)]
            for stream in streams:
                first = await stream.read()
                assert first.status == health_pb2.HealthCheckResponse.SERVING
                stream.cancel()
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                     timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
