"""The risk decisions and review log, read and written (risk/queries.py): rows in, typed
values out, so the use cases never see a driver row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway_bridge.risk import queries as q
from gateway_bridge.risk.rules import Outcome, RuleResult, Screening
from gateway_bridge.shared.terms import Direction


@dataclass(frozen=True, slots=True)
class Velocity:
    attempts: int
    amount_minor: int


def _decision(row: asyncpg.Record) -> Screening:
    results = tuple(RuleResult(r["code"], Outcome(r["outcome"]), r["message"])
                    for r in row["rules"])
    return Screening(payment_id=row["payment_id"], outcome=Outcome(row["decision"]),
                     results=results, review_status=row["review_status"],
                     scoring=row["scoring"])


async def decision(conn: asyncpg.Connection, payment_id: str) -> Screening | None:
    row = await conn.fetchrow(q.DECISION, payment_id)
    return None if row is None else _decision(row)


async def insert_decision(conn: asyncpg.Connection, *, payment_id: str, direction: Direction,
                          player_id: str, currency: str, amount_minor: int,
                          instrument_id: str, country: str, outcome: Outcome,
                          results: list[RuleResult], scoring: dict[str, Any] | None,
                          review_status: str | None) -> Screening:
    """Stores the decision unless one is stored already; returns the one that stands."""
    await conn.execute(q.INSERT_DECISION, payment_id, direction.value, player_id, currency,
                       amount_minor, instrument_id or None, country or None, outcome.value,
                       [r.to_json() for r in results], scoring, review_status)
    stored = await decision(conn, payment_id)
    if stored is None:
        raise AssertionError(f"the risk decision of {payment_id} vanished after insert")
    return stored


async def player_velocity(conn: asyncpg.Connection, *, player_id: str, direction: Direction,
                          currency: str, window_s: int, except_payment: str) -> Velocity:
    row = await conn.fetchrow(q.PLAYER_VELOCITY, player_id, direction.value, currency,
                              window_s, except_payment)
    return Velocity(row["attempts"], row["amount_minor"])


async def instrument_velocity(conn: asyncpg.Connection, *, instrument_id: str,
                              direction: Direction, currency: str, window_s: int,
                              except_payment: str) -> Velocity:
    row = await conn.fetchrow(q.INSTRUMENT_VELOCITY, instrument_id, direction.value, currency,
                              window_s, except_payment)
    return Velocity(row["attempts"], row["amount_minor"])


async def instrument_other_players(conn: asyncpg.Connection, *, instrument_id: str,
                                   player_id: str, window_s: int) -> int:
    return int(await conn.fetchval(q.INSTRUMENT_OTHER_PLAYERS, instrument_id, player_id,
                                   window_s))


async def wagering(conn: asyncpg.Connection, *, player_id: str, currency: str,
                   window_s: int) -> tuple[int, int]:
    """(deposited, wagered) minor units of the player's wallet in `currency` in the window."""
    row = await conn.fetchrow(q.WAGERING, player_id, currency, window_s)
    return row["deposited_minor"], row["wagered_minor"]


async def close_review(conn: asyncpg.Connection, payment_id: str, *, verdict: str,
                       actor: str, reason: str) -> bool:
    """Closes a pending review with `verdict`; False when it was not pending."""
    closed = await conn.fetchval(q.CLOSE_REVIEW, payment_id, verdict, actor, reason)
    return bool(closed == payment_id)


async def log_review(conn: asyncpg.Connection, payment_id: str, *, action: str, actor: str,
                     reason: str) -> None:
    await conn.execute(q.LOG_REVIEW, payment_id, action, actor, reason)


async def pending_reviews(conn: asyncpg.Connection, limit: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(q.PENDING_REVIEWS, limit)]


async def review_log(conn: asyncpg.Connection, payment_id: str,
                     limit: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(q.REVIEW_LOG, payment_id, limit)]
