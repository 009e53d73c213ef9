"""Health probes of each PSP's API on a schedule: the availability support and alerting see
before a payment fails (docs/INCIDENTS.md, "gateway downtime").

Each adapter's probe is one authenticated GET outside the circuit breaker and without
retries, so the probe reports the PSP as it is, and a PSP that is down costs one timeout per
round, not a payment. Results go to Prometheus gauges, to the log when a PSP changes
between up and down, and to bridge.psp_probes, where the gateway-downtime incident rule
reads the last few.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import asyncpg

from gateway_bridge import metrics
from gateway_bridge.incidents import store
from gateway_bridge.psp.base import ProbeResult, PspAdapter
from service_kit import pg

log = logging.getLogger(__name__)


async def probe_all(adapters: Mapping[str, PspAdapter],
                    previous: dict[str, bool] | None = None) -> dict[str, ProbeResult]:
    """Probe every PSP at once; gauges updated, changes since `previous` logged."""
    names = list(adapters)
    results = await asyncio.gather(*(adapters[n].probe() for n in names))
    found = dict(zip(names, results, strict=True))
    for name, result in found.items():
        metrics.PSP_PROBE_UP.labels(name).set(1 if result.up else 0)
        metrics.PSP_PROBE_DURATION.labels(name).set(result.duration_s)
        if previous is not None and previous.get(name, True) != result.up:
            log.warning("psp %s", "up again" if result.up else "down",
                        extra={"psp": name, "status": result.status, "reason": result.reason})
        if previous is not None:
            previous[name] = result.up
    return found


async def probe_forever(adapters: Mapping[str, PspAdapter], *, interval_ms: int,
                        pool: asyncpg.Pool | None = None, timeout_ms: int = 5000,
                        state: dict[str, bool] | None = None) -> None:
    """`probe_all` every `interval_ms` (each probe bounded by the PSP's own timeout), the
    results kept in Postgres when a pool is given; a round that can't be kept is logged.
    `state` receives each PSP's latest verdict (True: up) for whoever else reads it."""
    state = {} if state is None else state
    while True:
        results = await probe_all(adapters, state)
        if pool is not None and results:
            try:
                async with asyncio.timeout(timeout_ms / 1000), pool.acquire() as conn:
                    await store.record_probes(conn, results)
                    # Kept bounded here too: the probes run without the detector when only
                    # the metrics listener is on.
                    await store.prune_signals(conn)
            except (*pg.DB_ERRORS, TimeoutError) as exc:
                log.warning("probe results not kept", extra={"error": type(exc).__name__})
        await asyncio.sleep(interval_ms / 1000)
