"""KYC rows read and written (kyc/queries.py): typed values in and out."""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway_bridge.kyc import queries as q
from gateway_bridge.kyc.model import KycState, Verification

HISTORY_ROWS_MAX = 200


def _verification(row: asyncpg.Record) -> Verification:
    return Verification(player_id=row["player_id"], state=KycState(row["state"]),
                        provider=row["provider"], applicant_id=row["applicant_id"],
                        check_id=row["check_id"], checks_started=row["checks_started"],
                        birth_date=row["birth_date"], country=row["country"],
                        documents_expire_on=row["documents_expire_on"],
                        cash_out_allowed=row["cash_out_allowed"],
                        was_rejected=row["was_rejected"],
                        restriction=row["restriction"], updated_at=row["updated_at"])


async def verification(conn: asyncpg.Connection, player_id: str, *,
                       lock: bool = False) -> Verification:
    """The player's verification (a new player is `unverified`); `lock` takes its row."""
    if lock:
        await conn.execute(q.ENSURE, player_id)
        row = await conn.fetchrow(q.KYC_FOR_UPDATE, player_id)
    else:
        row = await conn.fetchrow(q.KYC, player_id)
    return Verification(player_id=player_id) if row is None else _verification(row)


async def by_check(conn: asyncpg.Connection, provider: str, check_id: str, *,
                   lock: bool = False) -> Verification | None:
    row = await conn.fetchrow(q.KYC_BY_CHECK_FOR_UPDATE if lock else q.KYC_BY_CHECK,
                              provider, check_id)
    return None if row is None else _verification(row)


async def event_seen(conn: asyncpg.Connection, provider: str, event_key: str) -> bool:
    return await conn.fetchval(q.EVENT_SEEN, provider, event_key[:300]) is not None


async def save(conn: asyncpg.Connection, v: Verification, *, before: Verification,
               source: str, actor: str, note: str) -> None:
    await conn.execute(q.SAVE, v.player_id, v.state.value, v.provider, v.applicant_id,
                       v.check_id, v.checks_started, v.birth_date, v.country,
                       v.documents_expire_on, v.cash_out_allowed, v.was_rejected,
                       v.restriction)
    await conn.execute(q.ADD_HISTORY, v.player_id, before.state.value, v.state.value, source,
                       actor, note[:500])


async def history(conn: asyncpg.Connection, player_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(q.HISTORY, player_id, HISTORY_ROWS_MAX)]


async def record_event(conn: asyncpg.Connection, provider: str, event_key: str,
                       outcome: str) -> bool:
    """False when this webhook was seen before."""
    return await conn.fetchval(q.RECORD_EVENT, provider, event_key[:300],
                               outcome[:200]) is not None


async def late_checks(conn: asyncpg.Connection, *, late_ms: int,
                      limit: int) -> list[tuple[str, str]]:
    """(player, check) pairs pending longer than `late_ms`."""
    return [(r["player_id"], r["check_id"])
            for r in await conn.fetch(q.LATE_CHECKS, late_ms, limit)]


async def touch(conn: asyncpg.Connection, player_id: str) -> None:
    await conn.execute(q.TOUCH, player_id)


async def deposited_minor(conn: asyncpg.Connection, player_id: str, currency: str) -> int:
    return int(await conn.fetchval(q.DEPOSITED, player_id, currency))


async def unsent_restrictions(conn: asyncpg.Connection, *, limit: int,
                              retry_after_ms: int) -> list[str]:
    """Players whose restriction the wallet does not have yet, due for a try."""
    return [r["player_id"]
            for r in await conn.fetch(q.UNSENT_RESTRICTIONS, limit, retry_after_ms)]


async def restriction_for_sending(conn: asyncpg.Connection,
                                  player_id: str) -> tuple[str, int] | None:
    """(encoded restriction, version) locked for sending; None when the wallet has it or
    another sender holds it."""
    row = await conn.fetchrow(q.RESTRICTION_FOR_SENDING, player_id)
    return None if row is None else (row["restriction"], row["restriction_version"])


async def restriction_tried(conn: asyncpg.Connection, player_id: str) -> None:
    await conn.execute(q.RESTRICTION_TRIED, player_id)


async def restriction_sent(conn: asyncpg.Connection, player_id: str, version: int) -> None:
    await conn.execute(q.RESTRICTION_SENT, player_id, version)


async def verified_after(conn: asyncpg.Connection, player_id: str, *,
                         limit: int) -> list[str]:
    return [r["player_id"] for r in await conn.fetch(q.VERIFIED_AFTER, player_id, limit)]


async def unsent_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(q.UNSENT_COUNT))
