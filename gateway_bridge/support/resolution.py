"""Settling a stuck payment by hand: support has found out what happened (the PSP's
dashboard, the bank, the player's proof) and says how the payment ended.

The answer goes into the inbox as an event from `support`, so the running bridge applies it
exactly like a PSP's answer: the same state machine, the same wallet keys derived from the
payment id (a repeated command is the same event and moves no money twice), the same
history. Only payments still waiting for an answer (open or timed out) can be settled this
way. A payment that waits for support for another reason (a mismatch, a partial payment, a
conflict) keeps its state; `dismiss` takes it off the attention list once support has dealt
with the money elsewhere, with the reason recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from gateway_bridge.incidents import store as incidents
from gateway_bridge.payments import store
from gateway_bridge.payments.model import OPEN_DEPOSIT, OPEN_PAYOUT, Payment
from gateway_bridge.shared.events import EventKind, PspEvent
from gateway_bridge.shared.terms import Direction
from gateway_bridge.support import queries


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"  # deposit captured / payout paid
    FAILED = "failed"        # deposit failed / payout failed (the reserve goes back)
    DISMISS = "dismiss"      # no money moves: attention taken off


class ResolveRefused(ValueError):
    """The payment can't be settled that way; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Resolved:
    payment_id: str
    inbox_id: int | None  # None for dismiss
    incidents: tuple[int, ...]
    # True when this exact settlement was stored before (the command repeated)
    again: bool = False


def _kind(p: Payment, outcome: Outcome) -> EventKind:
    if p.direction is Direction.DEPOSIT:
        return (EventKind.DEPOSIT_SUCCEEDED if outcome is Outcome.SUCCEEDED
                else EventKind.DEPOSIT_FAILED)
    return EventKind.PAYOUT_PAID if outcome is Outcome.SUCCEEDED else EventKind.PAYOUT_FAILED


def event_key(p: Payment, outcome: Outcome) -> str:
    """One settlement per payment and outcome: repeating the command is the same event."""
    return f"support:{p.id}:{_kind(p, outcome).value}"


def support_event(p: Payment, outcome: Outcome) -> PspEvent:
    """The event a PSP would have sent for this outcome, from support (pure)."""
    if p.direction is Direction.DEPOSIT:
        if p.state not in OPEN_DEPOSIT:
            raise ResolveRefused(f"{p.id} is {p.state.value}, not waiting for an answer; "
                                 "use --outcome dismiss to clear its attention")
    else:
        if p.state not in OPEN_PAYOUT:
            raise ResolveRefused(f"{p.id} is {p.state.value}, not a payout waiting for an "
                                 "answer; use --outcome dismiss to clear its attention")
        if p.withdrawal_id is None:
            raise ResolveRefused(f"{p.id} was never reserved in the wallet, so no money is "
                                 "held or can be paid; use --outcome dismiss")
    kind = _kind(p, outcome)
    return PspEvent(psp=p.psp, event_key=event_key(p, outcome), kind=kind,
                    psp_event_type=f"support:{outcome.value}", payment_id=p.id,
                    psp_reference=p.psp_reference, amount_minor=p.amount_minor,
                    currency=p.currency)


async def resolve(conn: asyncpg.Connection, payment_id: str, outcome: Outcome, *,
                  actor: str, reason: str, incident_id: int | None) -> Resolved:
    """In the caller's transaction: the settlement stored, the payment's history and every
    open incident it belongs to (and `incident_id`) told who and why.

    Lock order: the incidents first, then the payment, as the detector takes them (it locks
    the open incidents, then adds payments to them), so the two never deadlock."""
    if not reason.strip():
        raise ResolveRefused("--reason is required: it is kept in the payment's history")
    linked = set(await incidents.open_incidents_of_payment(conn, payment_id))
    if incident_id is not None:
        linked.add(incident_id)
    for n in sorted(linked):
        await incidents.lock(conn, n)
    p = await store.payment(conn, payment_id, lock=True)
    if p is None:
        raise ResolveRefused(f"no payment {payment_id}")
    if outcome is Outcome.DISMISS:
        check_dismiss(p)
        if await conn.fetchval(queries.CLEAR_ATTENTION, p.id) is None:
            raise ResolveRefused(f"{p.id} is not waiting for support")
        inbox_id = None
        said = f"attention cleared by {actor}: {reason}"
    else:
        earlier = await conn.fetch(queries.SUPPORT_EVENTS, p.id)
        wanted = store.stored_event_key(event_key(p, outcome))
        for e in earlier:
            if e["event_key"] == wanted:  # the same settlement again: nothing new
                return Resolved(payment_id=p.id, inbox_id=e["id"], incidents=(), again=True)
        if earlier:
            # One settlement per payment: a second, different one (two people, or a change
            # of mind) could commit a payout and then reverse it.
            raise ResolveRefused(
                f"{p.id} was already settled by hand differently (inbox event "
                f"{earlier[0]['id']}, {earlier[0]['status']}); if that was wrong, correct "
                "the money with a wallet adjustment and record why")
        inbox_id = await store.insert_event(conn, support_event(p, outcome), source="support")
        said = (f"settled by hand as {outcome.value} by {actor}: {reason} "
                f"(inbox event {inbox_id})")
    await store.add_history(conn, p, from_state=p.state, source="support", note=said)
    for n in sorted(linked):
        await incidents.note(conn, n, actor=actor, kind="action",
                             text=f"payment {p.id}: {said}",
                             data={"payment_id": p.id, "outcome": outcome.value})
    return Resolved(payment_id=p.id, inbox_id=inbox_id, incidents=tuple(sorted(linked)))


def check_dismiss(p: Payment) -> None:
    """Dismissing moves no money, so it is only for payments whose money is settled one way
    or another; one still waiting for an answer (or holding a reserve) is settled instead."""
    open_states = OPEN_DEPOSIT if p.direction is Direction.DEPOSIT else OPEN_PAYOUT
    never_reserved = p.direction is Direction.WITHDRAWAL and p.withdrawal_id is None
    if p.state in open_states and not never_reserved:
        raise ResolveRefused(f"{p.id} is {p.state.value} and still waiting for an answer: "
                             "settle it with --outcome succeeded or failed")


async def event_status(conn: asyncpg.Connection, inbox_id: int) -> tuple[str, str | None]:
    row = await conn.fetchrow(queries.INBOX_EVENT_STATUS, inbox_id)
    return (row["status"], row["last_error"]) if row else ("missing", None)
