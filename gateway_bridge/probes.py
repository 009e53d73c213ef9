"""Health probes of each PSP's API on a schedule: the availability support and alerting see
before a payment fails (DESIGN.md §11, "gateway downtime").

Each adapter's probe is one authenticated GET outside the circuit breaker and without
retries, so the probe reports the PSP as it is, and a PSP that is down costs one timeout per
round, not a payment. Results go to Prometheus gauges and to the log when a PSP changes
between up and down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from gateway_bridge import metrics
from gateway_bridge.psp.base import ProbeResult, PspAdapter

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


async def probe_forever(adapters: Mapping[str, PspAdapter], *, interval_ms: int) -> None:
    """`probe_all` every `interval_ms` (each probe bounded by the PSP's own timeout)."""
    state: dict[str, bool] = {}
    while True:
        await probe_all(adapters, state)
        await asyncio.sleep(interval_ms / 1000)
