"""The incident detector: every BRIDGE_INCIDENT_INTERVAL_MS it measures, runs the rules
(gateway_bridge/incidents/rules.py) and updates the incident records, in one transaction.

Several bridge replicas may run it; a transaction-scoped advisory lock lets one evaluate at
a time and the others skip that round, and the unique index on open incidents keeps one
record per rule and scope whatever happens. Circuit-breaker state lives in each process, so
an evaluation sees its own replica's breakers (the probes, kept in Postgres, are shared).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import asyncpg

from gateway_bridge import metrics
from gateway_bridge.incidents import store
from gateway_bridge.incidents.rules import IncidentPolicy, evaluate
from gateway_bridge.psp.base import PspAdapter
from service_kit import pg

log = logging.getLogger(__name__)


class Detector:
    def __init__(self, *, pool: asyncpg.Pool, policy: IncidentPolicy,
                 adapters: Mapping[str, PspAdapter], probe_interval_ms: int,
                 timeout_ms: int) -> None:
        self._pool = pool
        self._policy = policy
        self._adapters = adapters
        # Probe results older than a few probe rounds say nothing about now.
        self._probe_age_max_s = max(1, probe_interval_ms * (policy.probe_failures_min + 2)
                                    // 1000)
        self._timeout_s = timeout_ms / 1000

    async def evaluate_once(self) -> list[store.Change] | None:
        """The changes made, or None when another replica is evaluating right now."""
        async with asyncio.timeout(self._timeout_s), self._pool.acquire() as conn, \
                conn.transaction(isolation="read_committed"):
            if not await store.try_evaluation_lock(conn):
                # Another replica evaluates; the gauges here still follow the records.
                self._publish(await store.open_counts(conn))
                return None
            circuit_open = {n: not a.available for n, a in self._adapters.items()}
            measured = await store.measure(conn, self._policy, psps=sorted(self._adapters),
                                           circuit_open=circuit_open,
                                           probe_age_max_s=self._probe_age_max_s)
            changes = await store.apply(conn, self._policy, evaluate(self._policy, measured))
            await store.prune_signals(conn)
            counts = await store.open_counts(conn)
        self._publish(counts)
        for c in changes:
            log.warning("incident %s", c.what, extra={"incident": c.incident_id,
                                                      "rule": c.rule, "scope": c.scope})
            metrics.INCIDENT_CHANGES.labels(c.rule, c.what).inc()
        return changes

    @staticmethod
    def _publish(counts: Mapping[tuple[str, str], int]) -> None:
        metrics.INCIDENTS_OPEN.clear()
        for (rule, stage), n in counts.items():
            metrics.INCIDENTS_OPEN.labels(rule, stage).set(n)

    async def run(self) -> None:
        while True:
            try:
                await self.evaluate_once()
            except (*pg.DB_ERRORS, TimeoutError) as exc:
                metrics.INCIDENT_EVALUATION_FAILURES.inc()
                log.warning("incident evaluation failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(self._policy.interval_ms / 1000)
