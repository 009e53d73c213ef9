"""The inbox: verified PSP events are stored before they are acknowledged, then applied to
payments and the wallet here, one event per transaction.

A worker claims a due event (FOR UPDATE SKIP LOCKED), locks its payment, lets the domain
decide, makes the wallet call with a key derived from the payment, and records the new state,
the history line and the event's status in the same transaction. A crash anywhere in between
leaves the event pending; the next attempt repeats the wallet call with the same key and gets
the recorded outcome back. Retries are bounded with exponential backoff; an event that
exhausts them, or that the wallet refuses outright, goes `dead` for support to replay.

A deposit paid in another currency (docs/FX.md) is credited at a fresh rate taken now: no
fresh rate (stale, provider down) defers the event like an unreachable wallet, so it is
never credited at a stale rate and never lost. The rate is pinned (bridge.fx_rate_pins, its
own committed write) before the wallet call, so a retry after an unanswered call sends the
identical request; a pin is dropped when the wallet definitively refused, and re-priced when
it aged out and the wallet recorded nothing under its key. A chargeback of such a deposit,
reported in the paid currency, takes back the same share of the credit: its debit is pinned
per wallet key the same way (bridge.fx_chargeback_pins), computed against what the payment's
other disputes pinned, so a retry sends the same debit and all of them together never take
more than was credited (service_kit.fx.share_not_yet_taken).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from wallet.v1 import wallet_service_pb2 as pb

from gateway_bridge.config import Settings
from gateway_bridge.fx.rates import FxRates
from gateway_bridge.payments import store
from gateway_bridge.payments.cashier import convert
from gateway_bridge.payments.model import (
    NEEDS_SUPPORT,
    SYNCED,
    Action,
    Decision,
    Verdict,
    decide,
    wallet_key,
)
from gateway_bridge.payments.store import ChargebackPin, Payment, RatePin
from gateway_bridge.shared.errors import FxRefused, FxUnavailable
from gateway_bridge.shared.events import PspEvent
from gateway_bridge.wallet.client import WalletClient, WalletRefused, WalletUnavailable
from service_kit import fx

log = logging.getLogger("gateway_bridge.payments.inbox")

# The wallet says the withdrawal already moved on: an earlier event whose wallet call
# succeeded but whose reply was lost is still waiting for its retry. Once it lands, this event
# decides again against the true state (a payout.failed after a commit becomes a reversal).
_REFUSALS_AN_EARLIER_EVENT_MAY_EXPLAIN = frozenset({"WITHDRAWAL_ALREADY_FINAL",
                                                    "WITHDRAWAL_NOT_COMMITTED"})
# The wallet holds a different request under the key: what was pinned for it may be what it
# holds, so the pin stays.
_KEY_HOLDS_ANOTHER_REQUEST = "IDEMPOTENCY_KEY_REUSED"
# A pinned rate older than the maximum age is re-priced only once the call made with it is
# surely over: its deadline (the wallet timeout) times this.
_PIN_CALL_OVER_FACTOR = 2
_WALLET_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,63}")


class FxNotNow(Exception):
    """No fresh rate for a converted credit: the event waits and is retried."""


class FxNotCredited(Exception):
    """A converted credit that can never go through as it stands (worth nothing, above the
    cap): the event goes dead for support."""


def wallet_reference(psp_reference: str) -> str:
    """The wallet takes identifier-shaped references of up to 64 characters; anything else
    is replaced by a stable digest of itself."""
    if _WALLET_REFERENCE.fullmatch(psp_reference) or not psp_reference:
        return psp_reference
    return "h:" + hashlib.sha256(psp_reference.encode()).hexdigest()[:60]


class Inbox:
    def __init__(self, *, pool: asyncpg.Pool, wallet: WalletClient, settings: Settings,
                 rates: FxRates | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._pool = pool
        self._rates = rates
        self._wallet = wallet
        self._settings = settings
        self._clock = clock
        self._wake = asyncio.Event()
        self.applied_total = 0
        self.dead_total = 0

    def wake(self) -> None:
        self._wake.set()

    async def store(self, events: list[PspEvent], *, source: str) -> list[int | None]:
        """Stores events in one transaction; a None id marks a duplicate."""
        async with self._pool.acquire() as conn, conn.transaction():
            ids = [await store.insert_event(conn, e, source=source) for e in events]
        self.wake()
        return ids

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
            except store.DB_ERRORS as err:
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
            async with self._pool.acquire() as conn:
                await store.finish_event(conn, claimed[0], "dead",
                                        "internal error while applying; see the bridge log")
            self.dead_total += 1
        except store.DB_ERRORS:
            pass  # still pending; the next attempt meets the same error and tries again

    async def drain(self, *, timeout_ms: int = 10_000) -> None:
        """Processes every due event now (tests use it to wait deterministically)."""
        async with asyncio.timeout(timeout_ms / 1000):
            while await self.process_one():
                pass

    async def process_one(self, claimed: list[int] | None = None) -> bool:
        """Applies one due event; `claimed` receives its id (for the caller's error path)."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await store.claim_event(conn)
            if row is None:
                return False
            if claimed is not None:
                claimed.append(row["id"])
            event = store.event_from_json(row["event"])
            payment = await store.payment_for_event(conn, event)
            if payment is None:
                await self._unknown(conn, row, event)
                return True
            decision = decide(payment.facts(), event,
                              credit_partial=self._settings.credit_partial_payments)
            await self._handle(conn, row, event, payment, decision)
            return True

    async def _unknown(self, conn: asyncpg.Connection, row: asyncpg.Record,
                       event: PspEvent) -> None:
        """Our own id that names no payment can't become valid later: ignored. An event known
        only by PSP reference may come before the event that teaches us that reference (a
        Stripe dispute before the capture), so it waits like any deferred event."""
        if event.payment_id or not (event.psp_reference or event.psp_reference_alt):
            log.warning("event for an unknown payment ignored", extra={
                "psp": event.psp, "inbox_id": row["id"], "psp_event_type": event.psp_event_type})
            await store.finish_event(conn, row["id"], "ignored", "unknown payment")
            return
        if row["attempts"] + 1 >= self._settings.inbox_attempts_max:
            await store.finish_event(conn, row["id"], "dead", "no payment matches its PSP "
                                                             "reference")
            self.dead_total += 1
            return
        await store.retry_event(conn, row["id"], "unknown payment (yet)",
                               self._backoff_ms(row["attempts"]))

    async def _handle(self, conn: asyncpg.Connection, row: asyncpg.Record, event: PspEvent,
                      p: Payment, d: Decision) -> None:
        inbox_id: int = row["id"]
        if d.verdict is Verdict.IGNORE:
            if d.note.startswith("conflict"):
                p.attention = d.note
                await store.save(conn, p)
            await store.add_history(conn, p, from_state=p.state, source=row["source"],
                                   psp_event_type=event.psp_event_type, inbox_id=inbox_id,
                                   note=f"ignored: {d.note}")
            await store.finish_event(conn, inbox_id, "ignored", d.note)
            return
        if d.verdict is Verdict.DEFER:
            await self._retry_or_die(conn, row, p, d.note)
            return
        key = self._key(p, d, event)
        try:
            fx_note = await self._wallet_effect(conn, p, d, event, key)
        except FxNotNow as err:
            await self._retry_or_die(conn, row, p, f"not credited yet: {err}")
            return
        except FxNotCredited as err:
            # Raised before any wallet call under this key: whatever was pinned for it was
            # never sent, and must not bind a later attempt (a replay by support).
            await store.unpin_fx(conn, key)
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
                await store.unpin_fx(conn, key)
            if err.reason in _REFUSALS_AN_EARLIER_EVENT_MAY_EXPLAIN:
                await self._retry_or_die(conn, row, p, note)
            else:
                await self._die(conn, row, p, note)
            return
        before = p.state
        assert d.state is not None
        p.state = d.state
        p.psp_reference = p.psp_reference or event.psp_reference
        p.psp_reference_alt = p.psp_reference_alt or event.psp_reference_alt
        if d.action in (Action.DEPOSIT, Action.COMMIT):
            p.settled_minor += d.amount_minor or p.amount_minor
        elif d.action is Action.CHARGEBACK:
            p.charged_back_minor += d.amount_minor
        if p.state in NEEDS_SUPPORT:
            p.attention = d.note
        elif p.attention and not p.attention.startswith("event "):
            p.attention = None  # a timeout or conflict note is answered by this final word
        if p.state not in SYNCED:
            p.next_sync_at = None
            p.payout_destination = None
        await store.save(conn, p)
        await store.add_history(conn, p, from_state=before, source=row["source"],
                               psp_event_type=event.psp_event_type, inbox_id=inbox_id,
                               note=f"{d.note}; {fx_note}" if fx_note else d.note)
        await store.finish_event(conn, inbox_id, "applied", None)
        self.applied_total += 1

    @staticmethod
    def _key(p: Payment, d: Decision, event: PspEvent) -> str:
        """The wallet idempotency key of the decision's action ("" when it has none)."""
        if d.action is None:
            return ""
        return wallet_key(d.action, p.id, wallet_reference(event.dispute_reference or ""))

    async def _wallet_effect(self, conn: asyncpg.Connection, p: Payment, d: Decision,
                             event: PspEvent, key: str) -> str | None:
        """Makes the decision's wallet call under `key`; returns what the history line should
        add (the conversion of a converted deposit), if anything."""
        if d.action is None:
            return None
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
        return None

    async def _pinned_rate(self, conn: asyncpg.Connection, p: Payment, key: str) -> RatePin:
        """The rate this credit goes with: the one pinned before, or a fresh one pinned now.

        The pin is read on the worker's connection; no other connection is held while the
        provider is asked. The new pin is written on a pooled connection of its own, at once
        committed (this worker's transaction holds the payment row; the pin must outlive a
        rollback of it), then read back on the worker's connection: whoever wrote it wins,
        and that statement also restarts the transaction's idle clock before the wallet
        call. FxNotNow when no fresh rate is at hand."""
        assert p.wallet_currency
        pinned = await store.fx_rate_pin(conn, key)
        if pinned is not None and not await self._pin_abandoned(pinned, key):
            return pinned
        fresh = await self._fresh_rate(p.currency, p.wallet_currency)
        async with self._pool.acquire() as own:
            if pinned is None:
                await store.pin_fx_rate(own, wallet_key=key, payment_id=p.id,
                                       paid_currency=p.currency,
                                       wallet_currency=p.wallet_currency, pin=fresh)
            else:
                await store.repin_fx_rate(own, wallet_key=key, pin=fresh, replacing=pinned)
        now_pinned = await store.fx_rate_pin(conn, key)
        if now_pinned is None:
            raise AssertionError(f"the rate pinned for {key} vanished")
        return now_pinned

    async def _fresh_rate(self, paid_currency: str, wallet_currency: str) -> RatePin:
        if self._rates is None:
            raise FxNotNow("currency conversion is not enabled (BRIDGE_FX_RATES_URL)")
        try:
            rate = await self._rates.rate(paid_currency, wallet_currency)
        except (FxUnavailable, FxRefused) as err:
            raise FxNotNow(f"{err.code}: {err.message}") from None
        return RatePin(rate=rate.text, spread_bps=self._rates.spread_bps, source=rate.source,
                       as_of=rate.as_of)

    async def _pin_abandoned(self, pin: RatePin, key: str) -> bool:
        """A pin whose rate is older than the maximum age, whose wallet call is surely over
        (its deadline passed twice over), and under whose key the wallet recorded nothing:
        nothing binds its retry to that rate any more, so it gets a fresh one. A pin within
        the age is kept as it is, without asking the wallet. WalletUnavailable when the
        wallet can't be asked (the event is retried: sending the old rate blind could record
        it)."""
        if self._rates is None:
            return False
        now = self._clock()
        if (now - pin.as_of).total_seconds() * 1000 <= self._rates.age_max_ms:
            return False
        call_over_ms = self._settings.wallet_timeout_ms * _PIN_CALL_OVER_FACTOR
        if pin.pinned_at is None or \
                (now - pin.pinned_at).total_seconds() * 1000 <= call_over_ms:
            return False
        try:
            return not await self._wallet.recorded(key=key)
        except WalletRefused as err:
            # The wallet won't say (this token may not read journal entries): keep the pin,
            # which is always safe, if stale.
            log.warning("could not ask the wallet about a stale rate pin; keeping it",
                        extra={"reason": err.reason})
            return False

    async def _converted_deposit(self, conn: asyncpg.Connection, p: Payment, paid_minor: int,
                                 key: str) -> str:
        assert p.wallet_currency
        pin = await self._pinned_rate(conn, p, key)
        try:
            credited = convert(paid_minor, currency=p.currency,
                               wallet_currency=p.wallet_currency,
                               rate=fx.parse_rate(pin.rate), spread_bps=pin.spread_bps)
        except (FxRefused, fx.FxError) as err:
            raise FxNotCredited(str(err)) from None
        if credited <= 0:
            raise FxNotCredited(f"{paid_minor} {p.currency} minor units are worth less than "
                                f"one minor unit of {p.wallet_currency} at {pin.rate}")
        rate_time = Timestamp()
        rate_time.FromDatetime(pin.as_of)
        conversion = pb.Conversion(paid_currency=p.currency, paid_amount=paid_minor,
                                   rate=pin.rate, spread_bps=pin.spread_bps,
                                   rate_source=pin.source, rate_time=rate_time)
        await self._wallet.deposit(player_id=p.player_id, currency=p.wallet_currency,
                                   amount_minor=credited, psp=p.psp, psp_reference=p.id,
                                   key=key, conversion=conversion)
        credit: dict[str, Any] = {"rate": pin.rate, "pair": f"{p.currency}/{p.wallet_currency}",
                                  "source": pin.source, "as_of": pin.as_of.isoformat(),
                                  "spread_bps": pin.spread_bps, "paid_minor": paid_minor,
                                  "credited_minor": credited}
        p.fx = {**(p.fx or {}), "credit": credit}
        return (f"credited {credited} {p.wallet_currency} minor units for {paid_minor} "
                f"{p.currency} at {pin.rate} ({pin.source}, {pin.as_of.isoformat()}) less "
                f"{pin.spread_bps} bps")

    async def _converted_chargeback(self, conn: asyncpg.Connection, p: Payment,
                                    paid_minor: int, dispute: str, key: str) -> str:
        """The paid-currency dispute as the same share of the wallet credit: at the rate
        the deposit was credited at, never more than was credited in all, and the same
        debit on every retry under its wallet key (_pinned_debit)."""
        assert p.wallet_currency
        credit = (p.fx or {}).get("credit")
        if not credit:
            raise FxNotCredited("chargeback on a converted deposit without a recorded credit")
        pin = await self._pinned_debit(conn, p, credit, paid_minor=paid_minor, key=key)
        debit = pin.debit_minor
        note = (f"charged back {paid_minor} {p.currency} minor units = {debit} "
                f"{p.wallet_currency} at the deposit's rate {credit['rate']}")
        if debit > 0:
            await self._wallet.chargeback(
                player_id=p.player_id, currency=p.wallet_currency, amount_minor=debit,
                psp=p.psp, psp_reference=dispute, key=key)
        else:
            note += " (less than one minor unit: nothing debited)"
        fx_state = dict(p.fx or {})
        fx_state["charged_back_wallet_minor"] = int(
            fx_state.get("charged_back_wallet_minor", 0)) + debit
        p.fx = fx_state
        return note

    async def _pinned_debit(self, conn: asyncpg.Connection, p: Payment,
                            credit: dict[str, Any], *, paid_minor: int,
                            key: str) -> ChargebackPin:
        """The wallet debit of this dispute: pinned before, or computed and pinned now.

        Computed against what the payment's other disputes pinned (applied, or sent and
        still being retried), not against those applied so far: the dispute's slice starts
        where theirs end, and it takes the cumulative share less what they take. A dispute
        whose wallet call went unanswered thus keeps its debit however the others are
        ordered, and all of them together never take more than was credited. The payment
        row lock this worker holds serializes the disputes of one payment. Pinned like a
        rate (own connection, committed, read back here) before the wallet call."""
        pinned = await store.fx_chargeback_pin(conn, key)
        if pinned is not None:
            return pinned
        others = await store.fx_chargebacks_pinned(conn, payment_id=p.id, except_key=key)
        # max(): disputes applied before pins existed are only in the payment's own sums.
        debit = fx.share_not_yet_taken(
            int(credit["credited_minor"]), whole=int(credit["paid_minor"]), part=paid_minor,
            part_before=max(p.charged_back_minor, others.paid_minor),
            taken_before=max(int((p.fx or {}).get("charged_back_wallet_minor", 0)),
                             others.debit_minor))
        async with self._pool.acquire() as own:
            await store.pin_fx_chargeback(own, wallet_key=key, payment_id=p.id,
                                         pin=ChargebackPin(paid_minor=paid_minor,
                                                           debit_minor=debit))
        now_pinned = await store.fx_chargeback_pin(conn, key)
        if now_pinned is None:
            raise AssertionError(f"the debit pinned for {key} vanished")
        return now_pinned

    def _backoff_ms(self, attempts: int) -> int:
        s = self._settings
        base = min(s.inbox_backoff_max_ms, s.inbox_backoff_ms * 2 ** min(attempts, 30))
        # Jitter spreads the retries of many events that failed together (wallet outage).
        return int(base * random.uniform(0.5, 1.0))

    async def _retry_or_die(self, conn: asyncpg.Connection, row: asyncpg.Record, p: Payment,
                            note: str) -> None:
        if row["attempts"] + 1 >= self._settings.inbox_attempts_max:
            await self._die(conn, row, p, f"{note}; gave up after {row['attempts'] + 1} "
                                          "attempts")
            return
        await store.retry_event(conn, row["id"], note, self._backoff_ms(row["attempts"]))

    async def _die(self, conn: asyncpg.Connection, row: asyncpg.Record, p: Payment,
                   note: str) -> None:
        log.error("inbox event dead-lettered", extra={
            "inbox_id": row["id"], "payment_id": p.id, "psp": p.psp, "note": note})
        p.attention = f"event {row['id']} dead-lettered: {note}"[:500]
        await store.save(conn, p)
        await store.add_history(conn, p, from_state=p.state, source="worker",
                               inbox_id=row["id"], note=f"dead-lettered: {note}")
        await store.finish_event(conn, row["id"], "dead", note)
        self.dead_total += 1
