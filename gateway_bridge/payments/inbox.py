"""The inbox: verified PSP events are stored before they are acknowledged, then applied to
payments and the wallet here, one event per transaction.

A worker claims a due event (FOR UPDATE SKIP LOCKED), locks its payment, lets the domain
decide, makes the wallet call with a key derived from the payment, and records the new state,
the history line and the event's status in the same transaction. A crash anywhere in between
leaves the event pending; the next attempt repeats the wallet call with the same key and gets
the recorded outcome back. Retries are bounded with exponential backoff; an event that
exhausts them, or that the wallet refuses outright, goes `dead` for support to replay.

A deposit paid in another currency (docs/FX.md) is credited at a rate pinned before the
wallet call, and a chargeback of it debits a share pinned the same way (fx/pinning.py), so a
retry after an unanswered call sends the identical request. The bookkeeping an applied
decision does to the payment is the pure `apply` of payments/model.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg

from gateway_bridge.fx.conversion import convert
from gateway_bridge.fx.pinning import CreditPins, FxNotCredited, FxNotNow
from gateway_bridge.fx.rates import FxRates
from gateway_bridge.payments import store
from gateway_bridge.payments.model import (
    Action,
    Decision,
    FxCredit,
    Payment,
    PaymentFx,
    Refusal,
    State,
    Verdict,
    apply,
    dead_lettered,
    decide,
    is_conflict,
    refund_owed,
    wallet_key,
)
from gateway_bridge.payments.refunds import settle
from gateway_bridge.payments.settings import PaymentSettings
from gateway_bridge.payments.store import ClaimedEvent
from gateway_bridge.routing.service import Router
from gateway_bridge.shared.errors import FxRefused
from gateway_bridge.shared.events import EventKind, PspEvent
from gateway_bridge.wallet.client import (
    Conversion,
    WalletClient,
    WalletRefused,
    WalletUnavailable,
)
from service_kit import fx, pg

log = logging.getLogger("gateway_bridge.payments.inbox")

# The wallet's refusals of a credit made to protect the player (responsible gambling, and
# the operator's age and country restrictions): the deposit is refunded at the PSP instead of
# waiting for support.
_PLAYER_PROTECTION_REFUSALS = frozenset({"LIMIT_EXCEEDED", "SELF_EXCLUDED", "TIMED_OUT",
                                         "UNDERAGE", "COUNTRY_BLOCKED"})
# The wallet says the withdrawal already moved on: an earlier event whose wallet call
# succeeded but whose reply was lost is still waiting for its retry. Once it lands, this event
# decides again against the true state (a payout.failed after a commit becomes a reversal).
_REFUSALS_AN_EARLIER_EVENT_MAY_EXPLAIN = frozenset({"WITHDRAWAL_ALREADY_FINAL",
                                                    "WITHDRAWAL_NOT_COMMITTED"})
# The wallet holds a different request under the key: what was pinned for it may be what it
# holds, so the pin stays.
_KEY_HOLDS_ANOTHER_REQUEST = "IDEMPOTENCY_KEY_REUSED"
_WALLET_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,63}")


def wallet_reference(psp_reference: str) -> str:
    """The wallet takes identifier-shaped references of up to 64 characters; anything else
    is replaced by a stable digest of itself."""
    if _WALLET_REFERENCE.fullmatch(psp_reference) or not psp_reference:
        return psp_reference
    return "h:" + hashlib.sha256(psp_reference.encode()).hexdigest()[:60]


def _routing_outcome(state: State) -> bool | None:
    """What a payment reaching `state` teaches routing about its PSP: captured or paid out
    is a success, declined or failed a failure; an expired checkout (the payer left) says
    nothing about the PSP."""
    if state in (State.SUCCEEDED, State.PARTIALLY_PAID, State.PAID):
        return True
    if state in (State.FAILED, State.PAYOUT_FAILED):
        return False
    return None


class Inbox:
    def __init__(self, *, pool: asyncpg.Pool, wallet: WalletClient, settings: PaymentSettings,
                 wallet_timeout_ms: int, acquire_timeout_ms: int, rates: FxRates | None = None,
                 router: Router | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._pool = pool
        self._router = router
        self._wallet = wallet
        self._settings = settings
        self._acquire_timeout_s = acquire_timeout_ms / 1000
        self._pins = CreditPins(pool=pool, rates=rates, wallet=wallet,
                                wallet_timeout_ms=wallet_timeout_ms,
                                acquire_timeout_ms=acquire_timeout_ms, clock=clock)
        self._wake = asyncio.Event()
        self.applied_total = 0
        self.dead_total = 0

    def wake(self) -> None:
        self._wake.set()

    async def store(self, events: list[PspEvent], *, source: str) -> list[int | None]:
        """Stores events in one transaction; a None id marks a duplicate."""
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn, conn.transaction(isolation="read_committed"):
            ids = [await store.insert_event(conn, e, source=source) for e in events]
        self.wake()
        return ids

    async def counts(self) -> dict[str, int]:
        """Inbox events by status (readiness and support)."""
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            return await store.inbox_counts(conn)

    async def run(self) -> None:
        """Runs `inbox_workers` loops until cancelled."""
        async with asyncio.TaskGroup() as group:
            for n in range(self._settings.inbox_workers):
                group.create_task(self._loop(), name=f"inbox-worker-{n}")

    async def _loop(self) -> None:
        poll_s = self._settings.inbox_poll_ms / 1000
        while True:
            claimed: list[int] = []
            try:
                busy = await self.process_one(claimed)
            except pg.DB_ERRORS as err:
                log.warning("inbox worker: database trouble, backing off",
                            extra={"error": type(err).__name__})
                await asyncio.sleep(poll_s)
                continue
            except Exception:
                # A bug met by one event must not stop the others: that event is parked
                # (dead, for support) and the worker goes on.
                log.exception("inbox worker: unexpected error", extra={"inbox_id": claimed})
                await self._quarantine(claimed)
                continue
            if not busy:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), poll_s)
                except TimeoutError:
                    pass

    async def _quarantine(self, claimed: list[int]) -> None:
        if not claimed:
            return
        try:
            async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
                await store.finish_event(conn, claimed[0], "dead",
                                        "internal error while applying; see the bridge log")
            self.dead_total += 1
        except pg.DB_ERRORS:
            pass  # still pending; the next attempt meets the same error and tries again

    async def drain(self, *, timeout_ms: int = 10_000) -> None:
        """Processes every due event now (tests use it to wait deterministically)."""
        async with asyncio.timeout(timeout_ms / 1000):
            while await self.process_one():
                pass

    async def process_one(self, claimed: list[int] | None = None) -> bool:
        """Applies one due event; `claimed` receives its id (for the caller's error path)."""
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn, conn.transaction(isolation="read_committed"):
            row = await store.claim_event(conn)
            if row is None:
                return False
            if claimed is not None:
                claimed.append(row.id)
            # Read after the id is handed out: an event that can't be read is parked.
            event = store.event_from_json(row.payload)
            if event.kind in (EventKind.REFUND_SETTLED, EventKind.REFUND_FAILED):
                await self._refund_outcome(conn, row, event)
                return True
            payment = await store.payment_for_event(conn, event)
            if payment is None:
                await self._unknown(conn, row, event)
                return True
            decision = decide(payment.facts(), event,
                              credit_partial=self._settings.credit_partial_payments)
            await self._handle(conn, row, event, payment, decision)
            return True

    async def _unknown(self, conn: asyncpg.Connection, row: ClaimedEvent,
                       event: PspEvent) -> None:
        """Our own id that names no payment can't become valid later: ignored. An event known
        only by PSP reference may come before the event that teaches us that reference (a
        Stripe dispute before the capture), so it waits like any deferred event."""
        if event.payment_id and await self._abandoned_attempt(conn, row, event):
            return
        if event.payment_id or not (event.psp_reference or event.psp_reference_alt):
            log.warning("event for an unknown payment ignored", extra={
                "psp": event.psp, "inbox_id": row.id, "psp_event_type": event.psp_event_type})
            await store.finish_event(conn, row.id, "ignored", "unknown payment")
            return
        if row.attempts + 1 >= self._settings.inbox_attempts_max:
            await store.finish_event(conn, row.id, "dead", "no payment matches its PSP "
                                                          "reference")
            self.dead_total += 1
            return
        await store.retry_event(conn, row.id, "unknown payment (yet)",
                                self._backoff_ms(row.attempts))

    async def _refund_outcome(self, conn: asyncpg.Connection, row: ClaimedEvent,
                              event: PspEvent) -> None:
        """The PSP's word on a refund the bridge asked for (payments/refunds.py): it settles
        the refund, which moves no money in the wallet. A refund the bridge did not ask for
        (made in the PSP's dashboard) is recorded and left alone."""
        found = None if not event.psp_reference else await store.refund_by_capture(
            conn, event.psp, event.psp_reference)
        if found is None or found.state not in ("owed", "requested"):
            note = ("not a refund the bridge asked for" if found is None
                    else f"the refund is already {found.state}")
            await store.finish_event(conn, row.id, "ignored", note)
            return
        reference = event.psp_reference_alt or found.refund_reference
        if event.kind is EventKind.REFUND_SETTLED:
            await settle(conn, found, state="refunded", source=row.source, fenced=False,
                         reference=reference,
                         note=f"refunded at {found.psp} as {reference} ({event.psp_event_type})")
        else:
            why = f"{found.psp} reports the refund failed ({event.psp_event_type})"
            await settle(conn, found, state="failed", source=row.source, fenced=False,
                         reference=reference, error=why,
                         note=f"{why}; refund {found.psp_reference} by hand")
        await store.finish_event(conn, row.id, "applied", f"refund {event.kind}")

    async def _owe(self, conn: asyncpg.Connection, p: Payment, event: PspEvent,
                   note: str) -> Payment:
        """Records the capture `event` reports as owed back at its PSP (payments/refunds.py
        pays it) and names it on the payment; a capture owed already is said once. Returns
        the payment as saved."""
        # The capture's own reference (Stripe's payment intent and Adyen's payment
        # pspReference are the second reference of a checkout, the first of a charge).
        capture = event.psp_reference_alt or event.psp_reference
        owed = None if not capture else await store.owe_refund(
            conn, payment_id=p.id, psp=event.psp, psp_reference=capture,
            # A partial payment is refunded for what arrived, not what was asked.
            amount_minor=event.received_minor or event.amount_minor or p.amount_minor,
            currency=event.currency or p.currency)
        if capture and owed is None:
            return p  # a duplicate of a capture already owed (or already refunded)
        if owed is not None:
            note += f"; refund {owed} queued"
        p = refund_owed(p, event.psp, note)
        await store.save(conn, p)
        return p

    async def _abandoned_attempt(self, conn: asyncpg.Connection, row: ClaimedEvent,
                                 event: PspEvent) -> bool:
        """An event from a PSP a routed payment cascaded away from (payments.cashier
        ._cascade): never applied, so never credited twice. A capture there is money the
        player paid at the wrong PSP: it is owed back there (the refund worker pays it) and
        named on the payment. True when the event was such a one."""
        assert event.payment_id is not None
        p = await store.payment(conn, event.payment_id, lock=True)
        if p is None or p.routing is None \
                or event.psp not in {a.psp for a in p.routing.attempts}:
            return False
        note = f"{event.psp_event_type} from {event.psp}, an attempt this payment left"
        if event.kind in (EventKind.DEPOSIT_SUCCEEDED, EventKind.DEPOSIT_PARTIAL):
            p = await self._owe(conn, p, event, f"it captured this payment "
                                                f"({event.psp_event_type}) after the payment "
                                                f"cascaded to {p.psp}; not credited here")
            note = p.attention or note
        await store.add_history(conn, p, from_state=p.state, source=row.source,
                                psp_event_type=event.psp_event_type, inbox_id=row.id,
                                note=f"ignored: {note}")
        await store.finish_event(conn, row.id, "ignored", note)
        return True

    async def _handle(self, conn: asyncpg.Connection, row: ClaimedEvent, event: PspEvent,
                      p: Payment, d: Decision) -> None:
        if d.verdict is Verdict.IGNORE:
            if is_conflict(d):
                p = replace(p, attention=d.note)
                await store.save(conn, p)
            elif d.refund_capture:
                p = await self._owe(conn, p, event, d.note)
            await store.add_history(conn, p, from_state=p.state, source=row.source,
                                    psp_event_type=event.psp_event_type, inbox_id=row.id,
                                    note=f"ignored: {d.note}")
            await store.finish_event(conn, row.id, "ignored", d.note)
            return
        if d.verdict is Verdict.DEFER:
            await self._retry_or_die(conn, row, p, d.note)
            return
        key = self._key(p, d, event)
        try:
            fx_after, fx_note = await self._wallet_effect(conn, p, d, event, key)
        except FxNotNow as err:
            await self._retry_or_die(conn, row, p, f"not credited yet: {err}")
            return
        except FxNotCredited as err:
            # Raised before any wallet call under this key: whatever was pinned for it was
            # never sent, and must not bind a later attempt (a replay by support).
            await self._pins.unpin(conn, key)
            await self._die(conn, row, p, f"not credited: {err}")
            return
        except WalletUnavailable as err:
            await self._retry_or_die(conn, row, p, f"wallet unavailable ({err.code})")
            return
        except WalletRefused as err:
            note = f"wallet refused {d.action}: {err.reason}: {err.message}"
            if p.wallet_currency and err.reason != _KEY_HOLDS_ANOTHER_REQUEST:
                # A definitive answer to this very request: nothing a retry must repeat
                # exactly, so a pinned rate or debit is dropped with this event's outcome.
                await self._pins.unpin(conn, key)
            if err.reason in _REFUSALS_AN_EARLIER_EVENT_MAY_EXPLAIN:
                await self._retry_or_die(conn, row, p, note)
            elif d.action is Action.DEPOSIT and err.reason in _PLAYER_PROTECTION_REFUSALS:
                await self._refused_for_the_player(conn, row, p, event, err)
            else:
                await self._die(conn, row, p, note)
            return
        after = apply(p, d, event, fx=fx_after)
        if self._router is not None and p.routing is not None \
                and (success := _routing_outcome(after.state)) is not None:
            await self._router.record(conn, psp=p.psp, method=p.method, currency=p.currency,
                                      success=success)
        await store.save(conn, after)
        await store.add_history(conn, after, from_state=p.state, source=row.source,
                                psp_event_type=event.psp_event_type, inbox_id=row.id,
                                note=f"{d.note}; {fx_note}" if fx_note else d.note)
        await store.finish_event(conn, row.id, "applied", None)
        self.applied_total += 1

    @staticmethod
    def _key(p: Payment, d: Decision, event: PspEvent) -> str:
        """The wallet idempotency key of the decision's action ("" when it has none)."""
        if d.action is None:
            return ""
        return wallet_key(d.action, p.id, wallet_reference(event.dispute_reference or ""))

    async def _wallet_effect(self, conn: asyncpg.Connection, p: Payment, d: Decision,
                             event: PspEvent, key: str) -> tuple[PaymentFx | None, str | None]:
        """Makes the decision's wallet call under `key`; returns the payment's FX record
        after it and what the history line should add (a converted credit or debit), if
        anything."""
        if d.action is None:
            return None, None
        dispute = wallet_reference(event.dispute_reference or "")
        match d.action:
            case Action.DEPOSIT if p.wallet_currency:
                return await self._converted_deposit(conn, p, d.amount_minor, key)
            case Action.DEPOSIT:
                await self._wallet.deposit(player_id=p.player_id, currency=p.currency,
                                           amount_minor=d.amount_minor, psp=p.psp,
                                           psp_reference=p.id, key=key)
            case Action.CHARGEBACK if p.wallet_currency:
                return await self._converted_chargeback(conn, p, d.amount_minor, dispute,
                                                        key)
            case Action.CHARGEBACK:
                await self._wallet.chargeback(
                    player_id=p.player_id, currency=p.currency, amount_minor=d.amount_minor,
                    psp=p.psp, psp_reference=dispute, key=key)
            case Action.COMMIT:
                assert p.withdrawal_id
                await self._wallet.commit(withdrawal_id=p.withdrawal_id, key=key)
            case Action.CANCEL:
                assert p.withdrawal_id
                await self._wallet.cancel(withdrawal_id=p.withdrawal_id, key=key,
                                          reason=f"{p.psp}: {event.psp_event_type}"[:200])
            case Action.REVERSE:
                assert p.withdrawal_id
                await self._wallet.reverse(withdrawal_id=p.withdrawal_id, key=key,
                                           reason=f"{p.psp}: {event.psp_event_type}"[:200])
            case _:
                raise AssertionError(f"no wallet effect for {d.action}")
        return None, None

    async def _converted_deposit(self, conn: asyncpg.Connection, p: Payment, paid_minor: int,
                                 key: str) -> tuple[PaymentFx, str]:
        assert p.wallet_currency
        pin = await self._pins.rate(conn, key=key, payment_id=p.id, paid_currency=p.currency,
                                    wallet_currency=p.wallet_currency)
        try:
            credited = convert(paid_minor, currency=p.currency,
                               wallet_currency=p.wallet_currency,
                               rate=fx.parse_rate(pin.rate), spread_bps=pin.spread_bps)
        except (FxRefused, fx.FxError) as err:
            raise FxNotCredited(str(err)) from None
        if credited <= 0:
            raise FxNotCredited(f"{paid_minor} {p.currency} minor units are worth less than "
                                f"one minor unit of {p.wallet_currency} at {pin.rate}")
        await self._wallet.deposit(
            player_id=p.player_id, currency=p.wallet_currency, amount_minor=credited,
            psp=p.psp, psp_reference=p.id, key=key,
            conversion=Conversion(paid_currency=p.currency, paid_minor=paid_minor,
                                  rate=pin.rate, spread_bps=pin.spread_bps,
                                  rate_source=pin.source, rate_time=pin.as_of))
        credit = FxCredit(rate=pin.rate, pair=f"{p.currency}/{p.wallet_currency}",
                          source=pin.source, as_of=pin.as_of, spread_bps=pin.spread_bps,
                          paid_minor=paid_minor, credited_minor=credited)
        note = (f"credited {credited} {p.wallet_currency} minor units for {paid_minor} "
                f"{p.currency} at {pin.rate} ({pin.source}, {pin.as_of.isoformat()}) less "
                f"{pin.spread_bps} bps")
        return replace(p.fx or PaymentFx(), credit=credit), note

    async def _converted_chargeback(self, conn: asyncpg.Connection, p: Payment,
                                    paid_minor: int, dispute: str,
                                    key: str) -> tuple[PaymentFx, str]:
        """The paid-currency dispute as the same share of the wallet credit: at the rate
        the deposit was credited at, never more than was credited in all, and the same
        debit on every retry under its wallet key (CreditPins.debit)."""
        assert p.wallet_currency
        payment_fx = p.fx or PaymentFx()
        credit = payment_fx.credit
        if credit is None:
            raise FxNotCredited("chargeback on a converted deposit without a recorded credit")
        pin = await self._pins.debit(
            conn, key=key, payment_id=p.id, credited_minor=credit.credited_minor,
            credited_paid_minor=credit.paid_minor, paid_minor=paid_minor,
            charged_back_paid_minor=p.charged_back_minor,
            charged_back_wallet_minor=payment_fx.charged_back_wallet_minor or 0)
        debit = pin.debit_minor
        note = (f"charged back {paid_minor} {p.currency} minor units = {debit} "
                f"{p.wallet_currency} at the deposit's rate {credit.rate}")
        if debit > 0:
            await self._wallet.chargeback(
                player_id=p.player_id, currency=p.wallet_currency, amount_minor=debit,
                psp=p.psp, psp_reference=dispute, key=key)
        else:
            note += " (less than one minor unit: nothing debited)"
        return replace(payment_fx, charged_back_wallet_minor=(
            (payment_fx.charged_back_wallet_minor or 0) + debit)), note

    def _backoff_ms(self, attempts: int) -> int:
        s = self._settings
        base = min(s.inbox_backoff_max_ms, s.inbox_backoff_ms * 2 ** min(attempts, 30))
        # Jitter spreads the retries of many events that failed together (wallet outage).
        return int(base * random.uniform(0.5, 1.0))

    async def _retry_or_die(self, conn: asyncpg.Connection, row: ClaimedEvent, p: Payment,
                            note: str) -> None:
        if row.attempts + 1 >= self._settings.inbox_attempts_max:
            await self._die(conn, row, p, f"{note}; gave up after {row.attempts + 1} attempts")
            return
        await store.retry_event(conn, row.id, note, self._backoff_ms(row.attempts))

    async def _refused_for_the_player(self, conn: asyncpg.Connection, row: ClaimedEvent,
                                      p: Payment, event: PspEvent,
                                      err: WalletRefused) -> None:
        """The wallet refused to credit a captured deposit for the player's own protection
        (a limit crossed, or a break, since the cashier's check: docs/COMPLIANCE.md). The
        money goes back where it came from: the deposit fails with the wallet's reason, and
        the capture is owed back at the PSP (payments/refunds.py)."""
        failed = replace(p, state=State.FAILED, next_sync_at=None,
                         refusal=Refusal(reason=err.reason, message=err.message[:500]))
        await store.save(conn, failed)
        failed = await self._owe(conn, failed, event,
                                 f"the wallet refused the credit ({err.reason})")
        queued = "refund" in (failed.attention or "") and "queued" in (failed.attention or "")
        await store.add_history(conn, failed, from_state=p.state, source=row.source,
                                psp_event_type=event.psp_event_type, inbox_id=row.id,
                                note=f"not credited: {err.reason}; " + (
                                    f"refund queued at {p.psp}" if queued else
                                    f"refund owed at {p.psp}: no capture reference, refund "
                                    "it by hand"))
        await store.finish_event(conn, row.id, "applied", f"refused: {err.reason}")

    async def _die(self, conn: asyncpg.Connection, row: ClaimedEvent, p: Payment,
                   note: str) -> None:
        log.error("inbox event dead-lettered", extra={
            "inbox_id": row.id, "payment_id": p.id, "psp": p.psp, "note": note})
        p = dead_lettered(p, row.id, note)
        await store.save(conn, p)
        await store.add_history(conn, p, from_state=p.state, source="worker",
                                inbox_id=row.id, note=f"dead-lettered: {note}")
        await store.finish_event(conn, row.id, "dead", note)
        self.dead_total += 1
