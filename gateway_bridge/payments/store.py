"""Typed calls over queries.py: rows in, `Payment` records and plain dicts out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway_bridge.payments import queries as q
from gateway_bridge.payments.model import (
    CashierRequest,
    Payment,
    PaymentFx,
    PspRefund,
    Refusal,
    State,
    instructions_from_json,
    instructions_to_json,
)
from gateway_bridge.routing.rules import RoutingDecision
from gateway_bridge.shared.events import EventKind, PspEvent
from gateway_bridge.shared.terms import Direction

HISTORY_ROWS_MAX = 500
EVENT_KEY_LENGTH_MAX = 200


def _payment(row: asyncpg.Record) -> Payment:
    direction = Direction(row["direction"])
    instructions, refusal, fx = row["instructions"], row["refusal"], row["fx"]
    return Payment(
        id=row["id"], direction=direction, state=State(row["state"]), psp=row["psp"],
        method=row["method"], player_id=row["player_id"], currency=row["currency"],
        amount_minor=row["amount_minor"], settled_minor=row["settled_minor"],
        charged_back_minor=row["charged_back_minor"], psp_reference=row["psp_reference"],
        psp_reference_alt=row["psp_reference_alt"], withdrawal_id=row["withdrawal_id"],
        client=row["client"], client_key=row["client_key"],
        request=CashierRequest.from_json(direction, row["request"]),
        payout_destination=row["payout_destination"],
        instructions=instructions_from_json(instructions) if instructions else None,
        refusal=Refusal.from_json(refusal) if refusal else None, attention=row["attention"],
        sync_attempts=row["sync_attempts"], next_sync_at=row["next_sync_at"],
        created_at=row["created_at"], updated_at=row["updated_at"],
        wallet_currency=row["wallet_currency"],
        fx=PaymentFx.from_json(fx) if fx is not None else None,
        routing=RoutingDecision.from_json(row["routing"]) if row["routing"] else None)


async def insert_payment(conn: asyncpg.Connection, *, payment_id: str, state: State,
                         client: str, client_key: str, request: CashierRequest, psp: str,
                         payout_destination: str | None, next_sync_at: datetime,
                         fx: PaymentFx | None = None,
                         routing: RoutingDecision | None = None) -> Payment | None:
    """None when (client, client_key) already names a payment. `psp`: the request's, or
    the one routing chose when it named none."""
    r = request
    row = await conn.fetchrow(q.INSERT_PAYMENT, payment_id, r.direction.value, state.value,
                              psp, r.method, r.player_id, r.currency, r.amount_minor, client,
                              client_key, r.to_json(), next_sync_at, payout_destination,
                              r.wallet_currency or None, None if fx is None else fx.to_json(),
                              None if routing is None else routing.to_json())
    return _payment(row) if row else None


async def payment_by_client_key(conn: asyncpg.Connection, client: str,
                                client_key: str) -> Payment | None:
    row = await conn.fetchrow(q.PAYMENT_BY_CLIENT_KEY, client, client_key)
    return _payment(row) if row else None


async def payment(conn: asyncpg.Connection, payment_id: str, *,
                  lock: bool = False) -> Payment | None:
    row = await conn.fetchrow(q.PAYMENT_FOR_UPDATE if lock else q.PAYMENT, payment_id)
    return _payment(row) if row else None


async def payments_by_any_reference(conn: asyncpg.Connection, reference: str,
                                    limit: int) -> list[Payment]:
    return [_payment(r)
            for r in await conn.fetch(q.PAYMENTS_BY_ANY_REFERENCE, reference, limit)]


async def payment_for_event(conn: asyncpg.Connection, event: PspEvent) -> Payment | None:
    """Locks the payment an event is about: by our id when the PSP echoed it, else by the
    PSP's references."""
    if event.payment_id:
        found = await payment(conn, event.payment_id, lock=True)
        if found is not None and found.psp == event.psp:
            return found
    for ref in (event.psp_reference, event.psp_reference_alt):
        if ref:
            row = await conn.fetchrow(q.PAYMENT_BY_REFERENCE_FOR_UPDATE, event.psp, ref)
            if row:
                return _payment(row)
    return None


async def save(conn: asyncpg.Connection, p: Payment) -> None:
    await conn.execute(
        q.SAVE_PAYMENT, p.id, p.state.value, p.psp_reference, p.psp_reference_alt,
        p.withdrawal_id, None if p.instructions is None else instructions_to_json(p.instructions),
        p.settled_minor, p.charged_back_minor, p.attention, p.sync_attempts, p.next_sync_at,
        None if p.refusal is None else p.refusal.to_json(), p.payout_destination,
        None if p.fx is None else p.fx.to_json(), p.psp,
        None if p.routing is None else p.routing.to_json())


async def add_history(conn: asyncpg.Connection, p: Payment, *, from_state: State | None,
                      source: str, note: str, psp_event_type: str | None = None,
                      inbox_id: int | None = None) -> None:
    await conn.execute(q.INSERT_HISTORY, p.id, from_state.value if from_state else None,
                       p.state.value, source, psp_event_type, inbox_id, note[:1000])


async def history(conn: asyncpg.Connection, payment_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(q.HISTORY, payment_id, HISTORY_ROWS_MAX)
    return [dict(r) for r in rows]


async def sync_due(conn: asyncpg.Connection, limit: int) -> list[str]:
    return [r["id"] for r in await conn.fetch(q.SYNC_DUE, limit)]


def event_to_json(e: PspEvent) -> dict[str, Any]:
    return {"psp": e.psp, "event_key": e.event_key, "kind": e.kind.value,
            "psp_event_type": e.psp_event_type, "payment_id": e.payment_id,
            "psp_reference": e.psp_reference, "psp_reference_alt": e.psp_reference_alt,
            "amount_minor": e.amount_minor, "currency": e.currency,
            "dispute_reference": e.dispute_reference, "received_minor": e.received_minor}


def event_from_json(d: dict[str, Any]) -> PspEvent:
    return PspEvent(**{**d, "kind": EventKind(d["kind"])})


async def insert_event(conn: asyncpg.Connection, e: PspEvent, *, source: str) -> int | None:
    """The inbox row's id, or None when this (psp, event_key) was stored before."""
    return await conn.fetchval(  # type: ignore[no-any-return]
        q.INSERT_EVENT, e.psp, stored_event_key(e.event_key), source, e.kind.value,
        e.psp_event_type[:200], e.payment_id, e.psp_reference, event_to_json(e))


def stored_event_key(event_key: str) -> str:
    """Event identities are kept whole; an unusually long one is stored as its digest, so two
    events that share a long prefix never collapse into one."""
    if len(event_key) <= EVENT_KEY_LENGTH_MAX:
        return event_key
    return "sha256:" + hashlib.sha256(event_key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """An inbox row claimed for processing (FOR UPDATE SKIP LOCKED, held by the caller's
    transaction)."""

    id: int
    attempts: int  # made before this one
    source: str  # webhook, sync, bridge, support
    payload: dict[str, Any]  # the stored event: event_from_json reads it


async def claim_event(conn: asyncpg.Connection) -> ClaimedEvent | None:
    row = await conn.fetchrow(q.CLAIM_EVENT)
    if row is None:
        return None
    return ClaimedEvent(id=row["id"], attempts=row["attempts"], source=row["source"],
                        payload=row["event"])


async def finish_event(conn: asyncpg.Connection, event_id: int, status: str,
                       note: str | None) -> None:
    await conn.execute(q.FINISH_EVENT, event_id, status, note[:1000] if note else None)


async def retry_event(conn: asyncpg.Connection, event_id: int, note: str,
                      delay_ms: int) -> None:
    await conn.execute(q.RETRY_EVENT, event_id, note[:1000], delay_ms)


async def dead_events(conn: asyncpg.Connection, *, after_id: int = 0,
                      limit: int = 100) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(q.DEAD_EVENTS, after_id, limit)]


async def replay_dead(conn: asyncpg.Connection, event_id: int | None) -> list[int]:
    return [r["id"] for r in await conn.fetch(q.REPLAY_DEAD, event_id)]


async def inbox_counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {r["status"]: r["n"] for r in await conn.fetch(q.INBOX_COUNTS)}


@dataclass(frozen=True, slots=True)
class OperationalCounts:
    payments: dict[tuple[str, str, str], int]  # (psp, direction, state), last 24 h
    attention: dict[tuple[str, str], int]  # (psp, why)
    inbox: dict[tuple[str, str], int]  # (psp, pending | dead)
    inbox_lag_s: dict[str, float]  # psp -> age of its oldest pending event


async def operational_counts(conn: asyncpg.Connection) -> OperationalCounts:
    row = await conn.fetchrow(q.OPERATIONAL_COUNTS)
    inbox = {(r[0], r[1]): int(r[2]) for r in row["inbox"]}
    lag = {r[0]: float(r[3]) for r in row["inbox"] if r[1] == "pending"}
    return OperationalCounts(
        payments={(r[0], r[1], r[2]): int(r[3]) for r in row["payments"]},
        attention={(r[0], r[1]): int(r[2]) for r in row["attention"]}, inbox=inbox,
        inbox_lag_s=lag)


async def last_deposit_psp(conn: asyncpg.Connection, player_id: str,
                           currency: str) -> str | None:
    """The PSP of the player's latest credited deposit in `currency`, if any."""
    found = await conn.fetchval(q.LAST_DEPOSIT_PSP, player_id, currency)
    return None if found is None else str(found)


def _refund(row: asyncpg.Record) -> PspRefund:
    return PspRefund(id=row["id"], payment_id=row["payment_id"], psp=row["psp"],
                     psp_reference=row["psp_reference"], amount_minor=row["amount_minor"],
                     currency=row["currency"], state=row["state"], attempts=row["attempts"],
                     refund_reference=row["refund_reference"], last_error=row["last_error"])


async def owe_refund(conn: asyncpg.Connection, *, payment_id: str, psp: str,
                     psp_reference: str, amount_minor: int, currency: str) -> int | None:
    """Records a refund owed at `psp`; None when that capture is owed already."""
    found = await conn.fetchval(q.INSERT_PSP_REFUND, payment_id, psp, psp_reference,
                                amount_minor, currency)
    return None if found is None else int(found)


async def lease_due_refund(conn: asyncpg.Connection, *, lease_ms: int) -> PspRefund | None:
    row = await conn.fetchrow(q.LEASE_DUE_REFUND, lease_ms)
    return None if row is None else _refund(row)


async def finish_refund(conn: asyncpg.Connection, r: PspRefund, *, state: str,
                        refund_reference: str | None, error: str | None) -> bool:
    """The leased attempt's outcome; False when the lease was lost (see the query)."""
    status: str = await conn.execute(q.FINISH_REFUND, r.id, state, refund_reference, error,
                                      r.attempts)
    return status == "UPDATE 1"


async def retry_refund(conn: asyncpg.Connection, r: PspRefund, *, after_ms: int,
                       error: str) -> None:
    await conn.execute(q.RETRY_REFUND, r.id, after_ms, error, r.attempts)


async def refund_by_capture(conn: asyncpg.Connection, psp: str,
                            psp_reference: str) -> PspRefund | None:
    row = await conn.fetchrow(q.REFUND_BY_CAPTURE_FOR_UPDATE, psp, psp_reference)
    return None if row is None else _refund(row)


async def settle_refund(conn: asyncpg.Connection, refund_id: int, *, state: str,
                        refund_reference: str | None, error: str | None) -> bool:
    status: str = await conn.execute(q.SETTLE_REFUND, refund_id, state, refund_reference,
                                      error)
    return status == "UPDATE 1"


async def refunds_of(conn: asyncpg.Connection, payment_id: str) -> list[PspRefund]:
    return [_refund(row) for row in await conn.fetch(q.REFUNDS_OF_PAYMENT, payment_id)]


async def refunds_in_state(conn: asyncpg.Connection, state: str, *,
                           limit: int) -> list[PspRefund]:
    return [_refund(row) for row in await conn.fetch(q.REFUNDS_IN_STATE, state, limit)]


async def reopen_refund(conn: asyncpg.Connection, refund_id: int, *,
                        note: str) -> PspRefund | None:
    row = await conn.fetchrow(q.REOPEN_REFUND, refund_id, note)
    return None if row is None else _refund(row)


async def refunded_by_hand(conn: asyncpg.Connection, refund_id: int, *, reference: str,
                           note: str) -> PspRefund | None:
    row = await conn.fetchrow(q.REFUNDED_BY_HAND, refund_id, reference, note)
    return None if row is None else _refund(row)


async def release_aml_held(conn: asyncpg.Connection, player_id: str) -> list[str]:
    """The player's withdrawals held for AML, handed back to the status sync."""
    return [r["id"] for r in await conn.fetch(q.RELEASE_AML_HELD, player_id)]
