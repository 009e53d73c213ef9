"""Debian's Prometheus against a real wallet and bridge, with the repo's configuration
(docs/SCALING.md): deploy/prometheus/prometheus.yml adapted by local_config.py (static
loopback targets instead of Docker DNS, the repo's alerts.yml, a 1 s scrape interval).

The wallet and the bridge are subprocesses as in the fault scenarios, the bridge's PSPs the
simulator in the test's loop; each serves /metrics on a leased port. The check waits for
Prometheus to scrape both, asks its HTTP API for their `up` and known metrics of each, finds
every alert rule of alerts.yml loaded and healthy with none active on healthy services,
then takes one PSP down in the simulator and sees PspProbeDown go pending on the series the
bridge really exports. The alert rules' unit tests (promtool test rules) run here too.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml

from loadtests.ports import lease_port
from tests.bridge.conftest import DEFAULT_KNOBS, Cashier
from tests.faults import test_bridge_faults as bridge_faults
from tests.faults.conftest import create_database, one_wallet, wallet_env
from tests.faults.processes import Proc, Reaper, log_tail
from tests.faults.test_bridge_faults import sim_url
from tests.infra.conftest import Results

__all__ = ["sim_url"]  # the PSP simulator fixture of the bridge fault scenario

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
SCRAPE_INTERVAL = "1s"
# Bridge gauges refreshed and PSPs probed every second, so they show within a scrape or two.
BRIDGE_REFRESH_MS = "1000"
# Debian's Prometheus starts in about a second; a loaded 2-core machine may take several.
READY_TIMEOUT_S = 30.0
# Both targets up: Prometheus' discovery manager passes targets on at most every 5 s, even
# static ones, so the first scrape comes about 5 s after start, plus up to one interval.
TARGETS_UP_TIMEOUT_S = 30.0
# Every rule evaluated once (1 s evaluation interval), the metrics scraped.
SETTLE_TIMEOUT_S = 30.0
# A PSP the simulator refuses shows as probe down at the next probe and scrape.
PENDING_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.2
HTTP_TIMEOUT_S = 5.0
SUBPROCESS_TIMEOUT_S = 120
PSPS = ("adyen", "nowpayments", "stripe")

T = TypeVar("T")


class NotYet(Exception):
    """What a poll saw instead of what it waits for (shown if the wait times out)."""


async def _until(what: str, probe: Callable[[], Awaitable[T]], *, timeout_s: float,
                 procs: list[Proc]) -> T:
    """Polls `probe` until it returns instead of raising NotYet; fails early if a process
    died, and with what the probe last saw after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        for proc in procs:
            if not proc.alive():
                raise AssertionError(f"waiting for {what}: {proc.describe_exit()}")
        try:
            return await probe()
        except (NotYet, aiohttp.ClientError, OSError, TimeoutError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout_s}s (last: {last!r}); prometheus "
                                 f"log:\n{log_tail(procs[0].log_path)}")
        await asyncio.sleep(POLL_INTERVAL_S)


class PrometheusApi:
    """The few calls of Prometheus' HTTP API the check makes."""

    def __init__(self, http: aiohttp.ClientSession, port: int) -> None:
        self.http = http
        self.base = f"http://127.0.0.1:{port}"

    async def ready(self) -> None:
        async with self.http.get(f"{self.base}/-/ready") as r:
            if r.status != 200:
                raise NotYet(f"/-/ready answered {r.status}")

    async def get(self, path: str, **params: str) -> Any:
        async with self.http.get(f"{self.base}{path}", params=params) as r:
            body = await r.json()
            assert r.status == 200 and body["status"] == "success", body
            return body["data"]

    async def query(self, promql: str) -> dict[str, float]:
        """Instant query: the value of each series, keyed by its labels (job excepted)."""
        data = await self.get("/api/v1/query", query=promql)
        return {",".join(f"{k}={v}" for k, v in sorted(s["metric"].items()) if k != "job"):
                float(s["value"][1]) for s in data["result"]}


def _local_config(path: Path, *, wallet: str, bridge: str, prometheus: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(PROMETHEUS_DIR / "local_config.py"), "--wallet", wallet,
         "--bridge", bridge, "--prometheus", prometheus, "--scrape-interval", SCRAPE_INTERVAL,
         "--out", str(path)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=SUBPROCESS_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _alert_names() -> set[str]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def _promtool_unit_tests() -> str:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: apt-get install prometheus"
    proc = subprocess.run([promtool, "test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml")],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=SUBPROCESS_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return "pass"


async def _services(sim_url: tuple[str, int], redis_url: str, reaper: Reaper,
                    log_dir: Path, http: aiohttp.ClientSession) -> tuple[int, int, list[Proc]]:
    """The wallet and the bridge, serving, with /metrics on leased ports."""
    sim, bridge_port = sim_url
    database = await create_database(
        os.environ["DATABASE_URL"], os.environ.get("WALLET_TEST_DB", "wallet_test")
        + "_prometheus")
    wallet_metrics = lease_port()
    wallet, wallet_port = await one_wallet(
        wallet_env(database, redis_url, WALLET_METRICS_ADDR=f"127.0.0.1:{wallet_metrics}"),
        reaper, log_dir)
    bridge_metrics = lease_port()
    bridge = bridge_faults._bridge(1, database_url=database, wallet_port=wallet_port, sim=sim,
                                   bridge_port=bridge_port, log_dir=log_dir)
    bridge.env.update(BRIDGE_METRICS_ADDR=f"127.0.0.1:{bridge_metrics}",
                      BRIDGE_METRICS_REFRESH_MS=BRIDGE_REFRESH_MS,
                      BRIDGE_PROBE_INTERVAL_MS=BRIDGE_REFRESH_MS)
    reaper.add(bridge.stop)
    await bridge_faults._start_bridge(bridge, Cashier(http, f"http://127.0.0.1:{bridge_port}",
                                                      sim))
    return wallet_metrics, bridge_metrics, [wallet, bridge]


async def test_prometheus_scrapes_the_wallet_and_the_bridge(
        faults_redis_url: str, reaper: Reaper, log_dir: Path, results: Results,
        sim_url: tuple[str, int]) -> None:
    """Prometheus: Debian's server scrapes the wallet and the bridge, every alert rule loaded."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: apt-get install prometheus"
    results.add(**{"alert unit tests (promtool)": _promtool_unit_tests()})
    sim, bridge_port = sim_url
    async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as http:
        wallet_metrics, bridge_metrics, services = await _services(
            sim_url, faults_redis_url, reaper, log_dir, http)
        port = lease_port()
        config = log_dir / "prometheus.yml"
        _local_config(config, wallet=f"127.0.0.1:{wallet_metrics}",
                      bridge=f"127.0.0.1:{bridge_metrics}", prometheus=f"127.0.0.1:{port}")
        prometheus = Proc("prometheus", [
            binary, f"--config.file={config}", f"--storage.tsdb.path={log_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}"], os.environ, log_dir / "prometheus.log")
        reaper.add(prometheus.stop)
        started = time.monotonic()
        prometheus.start()
        procs = [prometheus, *services]
        api = PrometheusApi(http, port)
        await _until("ready Prometheus", api.ready, timeout_s=READY_TIMEOUT_S, procs=procs)
        results.add(**{"seconds to ready": round(time.monotonic() - started, 1)})
        await _scraped(api, procs, started, results)
        await _rules_loaded(api, procs, results)
        cashier = Cashier(http, f"http://127.0.0.1:{bridge_port}", sim)
        try:
            await _probe_down_goes_pending(api, procs, cashier, results)
        finally:
            await cashier.knobs(**DEFAULT_KNOBS)
    results.passed = True


async def _scraped(api: PrometheusApi, procs: list[Proc], started: float,
                   results: Results) -> None:
    """Every target up, `up` 1 for both services, and metrics each defines present."""
    async def all_up() -> dict[str, str]:
        targets = (await api.get("/api/v1/targets", state="active"))["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if not health or set(health.values()) != {"up"}:
            raise NotYet([(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets])
        return health

    health = await _until("targets up", all_up, timeout_s=TARGETS_UP_TIMEOUT_S, procs=procs)
    results.add(**{"seconds to first scrape": round(time.monotonic() - started, 1),
                   "targets up": f"{len(health)} of {len(health)} ({', '.join(sorted(health))})"})
    assert {"wallet", "bridge", "prometheus"} <= set(health), health
    for job in ("wallet", "bridge"):
        assert list((await api.query(f'up{{job="{job}"}}')).values()) == [1.0], job

    async def probes() -> dict[str, float]:
        found = await api.query('bridge_psp_probe_up{job="bridge"}')
        if len(found) != len(PSPS):
            raise NotYet(found)
        return found

    probe_up = await _until("bridge_psp_probe_up for every PSP", probes,
                            timeout_s=SETTLE_TIMEOUT_S, procs=procs)
    assert set(probe_up.values()) == {1.0}, probe_up
    assert list((await api.query('wallet_redis_available{job="wallet"}')).values()) == [1.0]
    # The first-event legs of IncidentOpened and RoutingRefundFailed read these.
    starts = await api.query("process_start_time_seconds")
    assert len(starts) == 3, f"process_start_time_seconds of each target: {starts}"
    results.add(**{"known metrics": "bridge_psp_probe_up 1 for 3 PSPs, "
                                    "wallet_redis_available 1, process_start_time_seconds x3"})


async def _rules_loaded(api: PrometheusApi, procs: list[Proc], results: Results) -> None:
    """Every alert of alerts.yml loaded, evaluated without error, none active."""
    wanted = _alert_names()

    async def evaluated() -> list[dict[str, Any]]:
        groups = (await api.get("/api/v1/rules", type="alert"))["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        unhealthy = {r["name"]: (r["health"], r.get("lastError")) for r in rules
                     if r["health"] != "ok"}
        if {r["name"] for r in rules} != wanted or unhealthy:
            raise NotYet(f"missing {sorted(wanted - {r['name'] for r in rules})}, "
                         f"not ok {unhealthy}")
        return rules

    rules = await _until(f"{len(wanted)} alert rules evaluated with health ok", evaluated,
                         timeout_s=SETTLE_TIMEOUT_S, procs=procs)
    active = {r["name"]: r["state"] for r in rules if r["state"] != "inactive"}
    results.add(**{"alert rules loaded (health ok)": f"{len(rules)} of {len(wanted)}",
                   "alerts active on healthy services": len(active)})
    assert not active, f"alerts active on healthy services: {active}"


async def _probe_down_goes_pending(api: PrometheusApi, procs: list[Proc], cashier: Cashier,
                                   results: Results) -> None:
    """The simulator refuses adyen: PspProbeDown goes pending for adyen (its `for:` is 3
    minutes, so pending is as far as a check of seconds can see)."""
    down_at = time.monotonic()
    await cashier.knobs(down_psps=["adyen"])

    async def pending() -> list[dict[str, Any]]:
        alerts = (await api.get("/api/v1/alerts"))["alerts"]
        found = [a for a in alerts if a["labels"]["alertname"] == "PspProbeDown"]
        if not found:
            raise NotYet(await api.query('bridge_psp_probe_up{job="bridge"}'))
        return found

    found = await _until("PspProbeDown pending", pending, timeout_s=PENDING_TIMEOUT_S,
                         procs=procs)
    assert [(a["labels"]["psp"], a["state"]) for a in found] == [("adyen", "pending")], found
    results.add(**{"PspProbeDown pending after adyen down s":
                   round(time.monotonic() - down_at, 1)})
