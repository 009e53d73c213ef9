"""Typed calls over queries.py: rows in, `Payment` records and plain dicts out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway_bridge.payments import queries as q
from gateway_bridge.payments.model import Direction, PaymentFacts, State
from gateway_bridge.shared.events import EventKind, PspEvent

HISTORY_ROWS_MAX = 500
EVENT_KEY_LENGTH_MAX = 200
# What "the database is unreachable or failed" looks like to the callers of this module.
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


@dataclass(slots=True)
class Payment:
    """A stored payment; use cases change fields and call `save`."""

    id: str
    direction: Direction
    state: State
    psp: str
    method: str
    player_id: str
    currency: str
    amount_minor: int
    settled_minor: int
    charged_back_minor: int
    psp_reference: str | None
    psp_reference_alt: str | None
    withdrawal_id: str | None
    client: str
    client_key: str
    request: dict[str, Any]
    payout_destination: str | None
    instructions: dict[str, Any] | None
    refusal: dict[str, Any] | None
    attention: str | None
    sync_attempts: int
    next_sync_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # A converted deposit: the wallet's currency (`currency`/`amount_minor` are what is
    # paid), and the quote, the credit's rate and chargebacks in it (docs/FX.md).
    wallet_currency: str | None = None
    fx: dict[str, Any] | None = None

    @property
    def credit_currency(self) -> str:
        """The wallet currency this payment moves money in."""
        return self.wallet_currency or self.currency

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Payment:
        values = dict(row)
        values["direction"] = Direction(values["direction"])
        values["state"] = State(values["state"])
        return cls(**values)

    def facts(self) -> PaymentFacts:
        return PaymentFacts(self.direction, self.state, self.amount_minor, self.currency,
                            self.settled_minor, self.charged_back_minor)


async def insert_payment(conn: asyncpg.Connection, *, payment_id: str, direction: Direction,
                         state: State, psp: str, method: str, player_id: str, currency: str,
                         amount_minor: int, client: str, client_key: str,
                         request: dict[str, Any], payout_destination: str | None,
                         next_sync_at: datetime, wallet_currency: str | None = None,
                         fx: dict[str, Any] | None = None) -> Payment | None:
    """None when (client, client_key) already names a payment."""
    row = await conn.fetchrow(q.INSERT_PAYMENT, payment_id, direction.value, state.value, psp,
                              method, player_id, currency, amount_minor, client, client_key,
                              request, next_sync_at, payout_destination, wallet_currency, fx)
    return Payment.from_row(row) if row else None


async def payment_by_client_key(conn: asyncpg.Connection, client: str,
                                client_key: str) -> Payment | None:
    row = await conn.fetchrow(q.PAYMENT_BY_CLIENT_KEY, client, client_key)
    return Payment.from_row(row) if row else None


async def payment(conn: asyncpg.Connection, payment_id: str, *,
                  lock: bool = False) -> Payment | None:
    row = await conn.fetchrow(q.PAYMENT_FOR_UPDATE if lock else q.PAYMENT, payment_id)
    return Payment.from_row(row) if row else None


async def payments_by_any_reference(conn: asyncpg.Connection, reference: str,
                                    limit: int) -> list[Payment]:
    return [Payment.from_row(r)
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
                return Payment.from_row(row)
    return None


async def save(conn: asyncpg.Connection, p: Payment) -> None:
    await conn.execute(q.SAVE_PAYMENT, p.id, p.state.value, p.psp_reference,
                       p.psp_reference_alt, p.withdrawal_id, p.instructions, p.settled_minor,
                       p.charged_back_minor, p.attention, p.sync_attempts, p.next_sync_at,
                       p.refusal, p.payout_destination, p.fx)


@dataclass(frozen=True, slots=True)
class RatePin:
    """The rate a credit is sent to the wallet with (queries.PIN_FX_RATE); `pinned_at` is
    None until it is stored."""

    rate: str
    spread_bps: int
    source: str
    as_of: datetime
    pinned_at: datetime | None = None


async def pin_fx_rate(conn: asyncpg.Connection, *, wallet_key: str, payment_id: str,
                      paid_currency: str, wallet_currency: str, pin: RatePin) -> None:
    """Pins `pin` for `wallet_key` unless a rate is pinned already (the first one stays)."""
    await conn.execute(q.PIN_FX_RATE, wallet_key, payment_id, paid_currency, wallet_currency,
                       pin.rate, pin.spread_bps, pin.source, pin.as_of)


async def repin_fx_rate(conn: asyncpg.Connection, *, wallet_key: str, pin: RatePin,
                        replacing: RatePin) -> None:
    """Replaces the pin `replacing` (judged abandoned) by `pin`; a no-op if it changed."""
    await conn.execute(q.REPIN_FX_RATE, wallet_key, pin.rate, pin.spread_bps, pin.source,
                       pin.as_of, replacing.pinned_at)


async def fx_rate_pin(conn: asyncpg.Connection, wallet_key: str) -> RatePin | None:
    row = await conn.fetchrow(q.FX_RATE_PIN, wallet_key)
    if row is None:
        return None
    return RatePin(rate=row["rate"], spread_bps=row["spread_bps"], source=row["source"],
                   as_of=row["as_of"], pinned_at=row["pinned_at"])


@dataclass(frozen=True, slots=True)
class ChargebackPin:
    """A dispute of a converted deposit: paid-currency amount and the wallet debit sent."""

    paid_minor: int
    debit_minor: int


async def pin_fx_chargeback(conn: asyncpg.Connection, *, wallet_key: str, payment_id: str,
                            pin: ChargebackPin) -> None:
    """Pins the dispute's debit unless one is pinned already (the first one stays)."""
    await conn.execute(q.PIN_FX_CHARGEBACK, wallet_key, payment_id, pin.paid_minor,
                       pin.debit_minor)


async def fx_chargeback_pin(conn: asyncpg.Connection, wallet_key: str) -> ChargebackPin | None:
    row = await conn.fetchrow(q.FX_CHARGEBACK_PIN, wallet_key)
    return None if row is None else ChargebackPin(paid_minor=row["paid_minor"],
                                                  debit_minor=row["debit_minor"])


async def fx_chargebacks_pinned(conn: asyncpg.Connection, *, payment_id: str,
                                except_key: str) -> ChargebackPin:
    """The sums pinned by the payment's other disputes."""
    row = await conn.fetchrow(q.FX_CHARGEBACKS_PINNED, payment_id, except_key)
    return ChargebackPin(paid_minor=row["paid_minor"], debit_minor=row["debit_minor"])


async def unpin_fx(conn: asyncpg.Connection, wallet_key: str) -> None:
    """Forgets what was pinned for `wallet_key` (the wallet recorded nothing under it)."""
    await conn.execute(q.UNPIN_FX, wallet_key)


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


async def claim_event(conn: asyncpg.Connection) -> asyncpg.Record | None:
    return await conn.fetchrow(q.CLAIM_EVENT)


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


async def count_rejections(conn: asyncpg.Connection, psp: str, cause: str,
                           count: int) -> None:
    await conn.execute(q.COUNT_REJECTION, psp, cause, count)


async def rejections(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(q.REJECTIONS)]
