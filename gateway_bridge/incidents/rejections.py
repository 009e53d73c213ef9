"""Rejected webhooks, saved: the HTTP edge counts them in memory (a forged or malformed
request must cost no database write) and hands the counts here in the background."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from gateway_bridge.incidents import store


class RejectionLog:
    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout_ms: int) -> None:
        self._pool = pool
        self._acquire_timeout_s = acquire_timeout_ms / 1000

    async def save(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Adds `counts` ((psp, cause) -> rejected requests) to the running totals and to
        the current minute's counts the callback-error rule reads, all or nothing."""
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn, \
                conn.transaction(isolation="read_committed"):
            for (psp, cause), count in sorted(counts.items()):
                await store.count_rejection(conn, psp, cause, count)
