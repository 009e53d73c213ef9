"""The payments' database gauges: payments by state, what waits for support, inbox depth and
lag, AML cases open and KYC restrictions unsent, read from Postgres on a timer (the metrics
themselves are defined in metrics.py)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from gateway_bridge import metrics
from gateway_bridge.aml import store as aml_store
from gateway_bridge.kyc import store as kyc_store
from gateway_bridge.payments import store
from service_kit import pg

log = logging.getLogger("gateway_bridge.payments.gauges")


async def refresh(conn: asyncpg.Connection) -> None:
    """Payments by state, what waits for support, inbox depth and lag, from Postgres. Label
    sets that disappeared are cleared first, so a state nobody is in reads as absent."""
    counts = await store.operational_counts(conn)
    for gauge in (metrics.PAYMENTS, metrics.PAYMENTS_ATTENTION, metrics.INBOX, metrics.INBOX_LAG):
        gauge.clear()
    for (psp, direction, state), n in counts.payments.items():
        metrics.PAYMENTS.labels(psp, direction, state).set(n)
    for (psp, attention), n in counts.attention.items():
        metrics.PAYMENTS_ATTENTION.labels(psp, attention).set(n)
    for (psp, status), n in counts.inbox.items():
        metrics.INBOX.labels(psp, status).set(n)
    for psp, age_s in counts.inbox_lag_s.items():
        metrics.INBOX_LAG.labels(psp).set(age_s)
    cases = await aml_store.open_counts(conn)
    metrics.AML_CASES_OPEN.clear()
    metrics.AML_CASE_OLDEST.clear()
    for rule, holds, n, oldest_s in cases:
        metrics.AML_CASES_OPEN.labels(rule, str(holds).lower()).set(n)
        metrics.AML_CASE_OLDEST.labels(rule, str(holds).lower()).set(oldest_s)
    metrics.KYC_RESTRICTIONS_UNSENT.set(await kyc_store.unsent_count(conn))


async def refresh_forever(pool: asyncpg.Pool, *, interval_ms: int, timeout_ms: int) -> None:
    """The database gauges, every `interval_ms`; a failed round is counted and retried."""
    while True:
        try:
            async with asyncio.timeout(timeout_ms / 1000), \
                    pool.acquire(timeout=timeout_ms / 1000) as conn:
                await refresh(conn)
        except (*pg.DB_ERRORS, TimeoutError) as exc:
            metrics.REFRESH_FAILURES.inc()
            log.warning("metrics refresh failed", extra={"error": type(exc).__name__})
        await asyncio.sleep(interval_ms / 1000)
