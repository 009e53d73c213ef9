"""AML cases read and written (aml/queries.py): typed values in and out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway_bridge.aml import queries as q
from gateway_bridge.aml.rules import CASE_PAYMENTS_MAX, AmlPolicy, CaseState, Hit

CASES_MAX = 1000


@dataclass(frozen=True, slots=True)
class Case:
    id: int
    player_id: str
    rule: str
    state: CaseState
    holds_withdrawals: bool
    detail: str
    payment_ids: tuple[str, ...]
    narrative: str
    opened_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "player_id": self.player_id, "rule": self.rule,
                "state": self.state.value, "holds_withdrawals": self.holds_withdrawals,
                "detail": self.detail, "payment_ids": list(self.payment_ids),
                "narrative": self.narrative, "opened_at": self.opened_at.isoformat(),
                "updated_at": self.updated_at.isoformat()}


def _case(row: asyncpg.Record) -> Case:
    return Case(id=row["id"], player_id=row["player_id"], rule=row["rule"],
                state=CaseState(row["state"]), holds_withdrawals=row["holds_withdrawals"],
                detail=row["detail"], payment_ids=tuple(row["payment_ids"]),
                narrative=row["narrative"], opened_at=row["opened_at"],
                updated_at=row["updated_at"])


@dataclass(frozen=True, slots=True)
class Window:
    cumulative_minor: int
    recent: tuple[tuple[str, int], ...]  # (payment id, amount)
    instruments: int
    currencies: int


async def window(conn: asyncpg.Connection, policy: AmlPolicy, *, player_id: str,
                 currency: str, payment_id: str) -> Window:
    row = await conn.fetchrow(q.FACTS, player_id, currency, policy.cumulative_window_s,
                              policy.structuring_window_s, policy.instruments_window_s,
                              policy.currencies_window_s, payment_id)
    # The newest 1,000 come back newest first; the rules list them oldest first.
    recent = tuple((str(r[0]), int(r[1])) for r in reversed(row["recent"]))
    return Window(int(row["cumulative"]), recent, int(row["instruments"]),
                  int(row["currencies"]))


async def lock_player(conn: asyncpg.Connection, player_id: str) -> None:
    await conn.execute(q.LOCK_PLAYER, player_id)


async def open_or_extend(conn: asyncpg.Connection, *, player_id: str,
                         hit: Hit) -> tuple[int, bool]:
    """(case id, whether it was opened now)."""
    row = await conn.fetchrow(q.OPEN_OR_EXTEND, player_id, hit.rule, hit.holds, hit.detail,
                              list(hit.payment_ids), CASE_PAYMENTS_MAX)
    return int(row["id"]), bool(row["opened"])


async def rules_naming(conn: asyncpg.Connection, player_id: str,
                       payment_id: str) -> set[str]:
    return {r["rule"] for r in await conn.fetch(q.RULES_NAMING, player_id, payment_id)}


async def holding_cases(conn: asyncpg.Connection, player_id: str) -> list[int]:
    return [int(r["id"]) for r in await conn.fetch(q.HOLDING_CASES, player_id)]


async def case(conn: asyncpg.Connection, case_id: int, *, lock: bool = False) -> Case | None:
    row = await conn.fetchrow(q.CASE_FOR_UPDATE if lock else q.CASE, case_id)
    return None if row is None else _case(row)


async def cases(conn: asyncpg.Connection, states: list[str], limit: int) -> list[Case]:
    return [_case(r) for r in await conn.fetch(q.CASES, states, min(limit, CASES_MAX))]


async def set_state(conn: asyncpg.Connection, c: Case, to: CaseState, *, narrative: str,
                    actor: str, note: str) -> None:
    await conn.execute(q.SET_STATE, c.id, to.value, narrative)
    await conn.execute(q.ADD_HISTORY, c.id, c.state.value, to.value, actor, note[:1000])


async def add_history(conn: asyncpg.Connection, case_id: int, *, to: CaseState, actor: str,
                      note: str) -> None:
    await conn.execute(q.ADD_HISTORY, case_id, None, to.value, actor, note[:1000])


async def history(conn: asyncpg.Connection, case_id: int) -> list[dict[str, Any]]:
    return [{**dict(r), "at": r["at"].isoformat()}
            for r in await conn.fetch(q.HISTORY, case_id)]


async def case_payments(conn: asyncpg.Connection, payment_ids: tuple[str, ...],
                        ) -> list[dict[str, Any]]:
    return [{**dict(r), "created_at": r["created_at"].isoformat()}
            for r in await conn.fetch(q.CASE_PAYMENTS, list(payment_ids))]


async def open_counts(conn: asyncpg.Connection) -> list[tuple[str, bool, int, float]]:
    """(rule, holds, cases not closed, the oldest one's age in seconds)."""
    return [(r["rule"], r["holds_withdrawals"], r["n"], r["oldest_s"])
            for r in await conn.fetch(q.OPEN_COUNTS)]


async def wallet_journal_readable(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(q.WALLET_JOURNAL_READABLE))
