"""The routing evidence, read and written (routing/queries.py)."""

from __future__ import annotations

import asyncpg

from gateway_bridge.routing import queries as q
from gateway_bridge.routing.learning import Tally


async def record_outcome(conn: asyncpg.Connection, *, psp: str, method: str, currency: str,
                         success: bool, half_life_s: float) -> None:
    await conn.execute(q.RECORD_OUTCOME, psp, method, currency, success, half_life_s)


async def tallies(conn: asyncpg.Connection, psps: list[str], *, method: str,
                  currency: str) -> dict[str, Tally]:
    """Each PSP's counts, with `at_s` as seconds ago (negative): the caller fades them to
    its own `now_s = 0`."""
    rows = await conn.fetch(q.TALLIES, psps, method, currency)
    return {r["psp"]: Tally(r["successes"], r["failures"], -r["age_s"]) for r in rows}
