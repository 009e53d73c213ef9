"""Status sync (Kill Bill calls it the janitor): payments the PSP has not settled within its
pending limit are asked about on a schedule, half-done withdrawals are driven on, a
payment nobody answers for becomes `timed_out` for support, and refunds owed at a PSP a
payment left are paid back (payments/refunds.py).

What a poll learns goes into the inbox like a webhook (source `poll`), so one code path
applies every PSP answer, with the same dedupe, retries and dead-letter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg

from gateway_bridge.payments import store
from gateway_bridge.payments.cashier import Payments
from gateway_bridge.payments.inbox import Inbox
from gateway_bridge.payments.model import SYNCED, Payment, State
from gateway_bridge.payments.refunds import PspRefunds
from gateway_bridge.payments.settings import PaymentSettings
from gateway_bridge.psp.base import PaymentRef, PspAdapter, PspError
from gateway_bridge.shared.terms import Direction
from service_kit import pg

log = logging.getLogger("gateway_bridge.payments.status_sync")



def poll_ref(p: Payment) -> PaymentRef:
    """What a PSP's status API is asked about one of our payments (it has a reference)."""
    assert p.psp_reference, "a payment is polled only once the PSP gave it a reference"
    return PaymentRef(payment_id=p.id, direction=p.direction.value,
                      psp_reference=p.psp_reference, amount_minor=p.amount_minor,
                      currency=p.currency)

class StatusSync:
    def __init__(self, *, pool: asyncpg.Pool, payments: Payments, inbox: Inbox,
                 adapters: Mapping[str, PspAdapter], settings: PaymentSettings,
                 acquire_timeout_ms: int,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._pool = pool
        self._acquire_timeout_s = acquire_timeout_ms / 1000
        self._payments = payments
        self._inbox = inbox
        self._adapters = adapters
        self._settings = settings
        self._clock = clock
        self.timed_out_total = 0
        self.refunds = PspRefunds(pool=pool, adapters=adapters,
                                  acquire_timeout_ms=acquire_timeout_ms)

    async def run(self) -> None:
        interval_s = self._settings.sync_interval_ms / 1000
        while True:
            try:
                await self.sync_due()
                await self.refunds.refund_due()
            except pg.DB_ERRORS as err:
                log.warning("status sync: database trouble", extra={
                    "error": type(err).__name__})
            await asyncio.sleep(interval_s)

    async def sync_due(self) -> int:
        """One pass over the payments that are due; returns how many were looked at."""
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            due = await store.sync_due(conn, self._settings.sync_batch_max)
        for payment_id in due:
            await self.sync_one(payment_id)
        return len(due)

    async def sync_one(self, payment_id: str) -> None:
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            p = await store.payment(conn, payment_id)
        if p is None:
            return
        if p.state not in SYNCED:
            await self._unschedule(p.id)
            return
        if p.state in (State.REQUESTED, State.RESERVED):
            await self._drive_withdrawal(p)
            return
        if p.state is State.CREATED:
            # The PSP never confirmed it and the cashier stopped retrying: the player never
            # got a checkout URL, so nothing can be paid into it. A card the bridge charged
            # may have been captured after all: such a capture is refunded when reported.
            await self._close(p, State.FAILED, "never confirmed by the PSP" + (
                "; a capture it reports later is refunded"
                if p.request.payment_token_sha256 else ""))
            return
        await self._poll(p)

    async def _drive_withdrawal(self, p: Payment) -> None:
        p = await self._payments.advance_withdrawal(p.id, source="poll")
        # A withdrawal advance_withdrawal held (a risk review, an AML case) is unscheduled
        # on purpose: counting an attempt would schedule it again and time it out.
        if p.state in (State.REQUESTED, State.RESERVED) and p.next_sync_at is not None:
            await self._count_attempt(p, "withdrawal not yet accepted by the PSP")

    async def _poll(self, p: Payment) -> None:
        adapter = self._adapters.get(p.psp)
        event = None
        if adapter is not None and adapter.available and p.psp_reference:
            try:
                event = await adapter.fetch_status(poll_ref(p))
            except PspError as err:
                log.warning("status poll failed", extra={"payment_id": p.id, "psp": p.psp,
                                                         "error": err.message})
        if event is not None and any(await self._inbox.store([event], source="poll")):
            # A new answer is on its way through the inbox: look again soon instead of
            # spending a step of the schedule (the last step would time it out).
            await self._recheck_soon(p.id)
            return
        await self._count_attempt(p, "no final answer from the PSP")

    async def _recheck_soon(self, payment_id: str) -> None:
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn, \
                conn.transaction(isolation="read_committed"):
            current = await store.payment(conn, payment_id, lock=True)
            if current is not None and current.state in SYNCED:
                await store.save(conn, replace(current, next_sync_at=self._clock() + timedelta(
                    milliseconds=self._settings.sync_interval_ms)))

    async def _count_attempt(self, p: Payment, why: str) -> None:
        schedule = self._settings.sync_schedule_ms
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn, \
                conn.transaction(isolation="read_committed"):
            found = await store.payment(conn, p.id, lock=True)
            if found is None or found.state not in SYNCED:
                return
            attempts = found.sync_attempts + 1
            if attempts < len(schedule):
                await store.save(conn, replace(
                    found, sync_attempts=attempts,
                    next_sync_at=self._clock() + timedelta(milliseconds=schedule[attempts])))
                return
            note = (f"{why} after {attempts} status checks; "
                    + ("funds stay reserved" if found.direction is Direction.WITHDRAWAL
                       else "nothing credited"))
            current = replace(found, sync_attempts=attempts, state=State.TIMED_OUT,
                              next_sync_at=None, attention=note)
            await store.save(conn, current)
            await store.add_history(conn, current, from_state=found.state, source="poll",
                                    note=note)
        self.timed_out_total += 1
        log.warning("payment timed out", extra={"payment_id": p.id, "psp": p.psp})

    async def _close(self, p: Payment, state: State, note: str) -> None:
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn, \
                conn.transaction(isolation="read_committed"):
            found = await store.payment(conn, p.id, lock=True)
            if found is None or found.state is not State.CREATED:
                return
            current = replace(found, state=state, next_sync_at=None)
            await store.save(conn, current)
            await store.add_history(conn, current, from_state=found.state, source="poll",
                                    note=note)

    async def _unschedule(self, payment_id: str) -> None:
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn, \
                conn.transaction(isolation="read_committed"):
            current = await store.payment(conn, payment_id, lock=True)
            if current is not None and current.state not in SYNCED:
                current = replace(current, next_sync_at=None)
                await store.save(conn, current)
