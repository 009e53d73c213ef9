"""Cashier use cases: start a deposit at a PSP, start a withdrawal (reserve in the wallet,
then ask the PSP to pay out), and read a payment with its history.

Each step is resumable. The payment row is written before anything leaves the bridge, and
every outbound call carries a key derived from the payment id (the PSP's Idempotency-Key,
the wallet's idempotency key), so a retried cashier request, a crash between steps or the
status sync driving a half-done withdrawal all ask for the same effect again, never a new one.

A deposit may be paid in a currency other than the wallet's (docs/FX.md): `currency` and
`amount_minor` are then what the PSP is asked for and the player pays, `wallet_currency` the
wallet credited. The cashier gets an indicative quote at a fresh rate (none stored when no
fresh rate is at hand); the credit itself uses the rate at credit time (gateway_bridge.payments.inbox).
The risk rules see such a deposit in the wallet's currency, at the quoted amount.

Every payment is screened by the risk rules (gateway_bridge.risk) once it is stored and
before anything leaves the bridge: a denied one goes nowhere; a deposit held for review is
not sent to the PSP, and a withdrawal held for review is reserved in the wallet but not paid
out, until support approves (`resume_deposit` / `advance_withdrawal`) or rejects
(`reject_held`) it (gateway_bridge.payments.review).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from asyncpg.pool import PoolAcquireContext

from gateway_bridge import metrics
from gateway_bridge.aml import store as aml_store
from gateway_bridge.aml.service import AmlService
from gateway_bridge.fx.conversion import convert
from gateway_bridge.fx.rates import FxRates
from gateway_bridge.kyc.model import Gate
from gateway_bridge.kyc.service import KycService
from gateway_bridge.payments import store
from gateway_bridge.payments.model import (
    Action,
    CashierRequest,
    FxQuote,
    Payment,
    PaymentFx,
    PspRefund,
    Refusal,
    State,
    refund_owed,
    wallet_key,
)
from gateway_bridge.payments.settings import PaymentSettings
from gateway_bridge.psp.base import (
    ChargeOrder,
    DepositOrder,
    PayoutOrder,
    PspAdapter,
    PspConfig,
    PspDeclined,
    PspUnavailable,
)
from gateway_bridge.risk.rules import Outcome, RiskDenied, Screening
from gateway_bridge.risk.service import RiskService, Subject
from gateway_bridge.routing.rules import Attempt, RouteRequest, RoutingDecision
from gateway_bridge.routing.service import Router
from gateway_bridge.shared.errors import (
    Conflict,
    FxRefused,
    NotFound,
    Refused,
    Unavailable,
    UpstreamDeclined,
)
from gateway_bridge.shared.events import EventKind, PspEvent
from gateway_bridge.shared.terms import DepositInstructions, Direction
from gateway_bridge.wallet.client import WalletClient, WalletRefused, WalletUnavailable

log = logging.getLogger("gateway_bridge.payments.cashier")

# When the wallet or the PSP could not be reached mid-withdrawal, the status sync picks the
# payment up again after this long (cashier retries may resume it sooner).
RESUME_AFTER_MS = 5_000


@dataclass(frozen=True, slots=True, kw_only=True)
class DepositCommand:
    client: str
    client_key: str
    player_id: str
    amount_minor: int
    currency: str
    psp: str
    method: str
    pay_currency: str = ""
    return_url: str = ""
    instrument_id: str = ""
    country: str = ""
    # Set (and different from `currency`) when the player pays in another currency.
    wallet_currency: str = ""
    # A stored card: the bridge charges it itself (server-to-server) instead of opening a
    # checkout, and a soft decline cascades to the next PSP. Never stored (only its digest).
    payment_token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class WithdrawalCommand:
    client: str
    client_key: str
    player_id: str
    amount_minor: int
    currency: str
    psp: str
    method: str
    destination: str = field(repr=False)
    instrument_id: str = ""
    country: str = ""


# How a wallet refusal reads to the cashier's client.
_BLOCKED = {"SELF_EXCLUDED": "self-excluded", "TIMED_OUT": "taking a time-out",
            "UNDERAGE": "under the minimum age", "COUNTRY_BLOCKED": "from a blocked country"}


def _review_note(screening: Screening) -> str:
    return "risk review: " + ", ".join(r.code for r in screening.reasons)


def risk_subject(p: Payment) -> Subject:
    """What the risk rules see of a payment: a converted deposit in the wallet's currency, at
    its quoted credit, so amount thresholds and velocity sums per currency compare like with
    like."""
    quote = p.fx.quote if p.fx is not None else None
    converted = bool(p.wallet_currency) and quote is not None
    return Subject(
        payment_id=p.id, direction=p.direction, player_id=p.player_id,
        currency=p.wallet_currency if converted and p.wallet_currency else p.currency,
        amount_minor=quote.estimated_credit_minor if converted and quote else p.amount_minor,
        psp=p.psp, method=p.method, instrument_id=p.request.instrument_id,
        country=p.request.country)


def psp_call_budget_ms(config: PspConfig) -> int:
    """The longest one outbound call can take with all its retries and backoff."""
    attempts = config.retries_max + 1
    backoff_ms: int = config.retry_backoff_ms * 2 ** attempts
    return attempts * config.timeout_ms + backoff_ms


def new_payment_id() -> str:
    return "pay_" + secrets.token_hex(12)


def cashier_request(command: DepositCommand | WithdrawalCommand) -> CashierRequest:
    """What is stored of a cashier command and compared when its Idempotency-Key comes
    again (the destination only as a digest: model.CashierRequest)."""
    if isinstance(command, DepositCommand):
        return CashierRequest(
            direction=Direction.DEPOSIT, player_id=command.player_id,
            amount_minor=command.amount_minor, currency=command.currency, psp=command.psp,
            method=command.method, pay_currency=command.pay_currency,
            return_url=command.return_url, instrument_id=command.instrument_id,
            country=command.country, wallet_currency=command.wallet_currency,
            payment_token_sha256=CashierRequest.token_digest(command.payment_token))
    return CashierRequest(
        direction=Direction.WITHDRAWAL, player_id=command.player_id,
        amount_minor=command.amount_minor, currency=command.currency, psp=command.psp,
        method=command.method, instrument_id=command.instrument_id, country=command.country,
        destination_sha256=CashierRequest.destination_digest(command.destination))


class Payments:
    def __init__(self, *, pool: asyncpg.Pool, wallet: WalletClient,
                 adapters: Mapping[str, PspAdapter], settings: PaymentSettings,
                 psps: Mapping[str, PspConfig], acquire_timeout_ms: int,
                 wake_inbox: Callable[[], None], risk: RiskService,
                 rates: FxRates | None = None, router: Router | None = None,
                 kyc: KycService | None = None, aml: AmlService | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._pool = pool
        self._acquire_timeout_s = acquire_timeout_ms / 1000
        self._rates = rates
        self._wallet = wallet
        self._adapters = adapters
        self._settings = settings
        self._psps = psps
        self._wake_inbox = wake_inbox
        self._risk = risk
        self._router = router
        self._kyc = kyc
        self._aml = aml
        self._attempts_max = router.attempts_max if router is not None else 1
        self._clock = clock

    def _connection(self) -> PoolAcquireContext:
        """A pooled connection, waited for at most the acquire timeout."""
        return self._pool.acquire(timeout=self._acquire_timeout_s)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A payment's read-lock-write: READ COMMITTED is enough, the row lock (FOR UPDATE)
        serializes writers of one payment."""
        async with self._connection() as conn, conn.transaction(isolation="read_committed"):
            yield conn

    def _require_available(self, psp: str) -> PspAdapter:
        adapter = self._adapters[psp]
        if not adapter.available:
            raise Unavailable(f"psp: {psp} is failing and temporarily switched off (circuit "
                              "open); try another payment method or retry later",
                              code="PSP_UNAVAILABLE", field="psp",
                              retry_after_s=max(1, self._cooldown_s(psp)))
        return adapter

    def _cooldown_s(self, psp: str) -> int:
        return self._psps[psp].breaker_cooldown_ms // 1000

    async def _route(self, command: DepositCommand | WithdrawalCommand,
                     direction: Direction) -> tuple[str, RoutingDecision | None]:
        """The PSP a new payment goes to: the one the cashier named while routing is off;
        else routing's first choice, a named PSP held to the rules (NoRoute, before anything
        is stored, when no rule allows the payment). A retry of a stored request keeps the
        payment's PSP and decision: it is routed once, whatever the rules say since."""
        if self._router is None or not self._router.enabled:
            return command.psp, None
        closed_loop = None
        async with self._connection() as conn:
            existing = await store.payment_by_client_key(conn, command.client,
                                                         command.client_key)
            if existing is None and direction is Direction.WITHDRAWAL and not command.psp:
                # Payouts follow the money: back where the player's deposits came from.
                closed_loop = await store.last_deposit_psp(conn, command.player_id,
                                                           command.currency)
        if existing is not None:
            return existing.psp, existing.routing
        # A PSP that can't take the request as sent is not a candidate: NOWPayments needs
        # the asset the player pays in, and takes no stored cards.
        unable: dict[str, str] = {}
        if isinstance(command, DepositCommand):
            for name, a in self._adapters.items():
                if a.needs_pay_currency and not command.pay_currency:
                    unable[name] = "pay_currency"
                elif command.payment_token and not a.supports_charges:
                    unable[name] = "payment_token"
        decision = await self._router.decide(RouteRequest(
            direction=direction, method=command.method, currency=command.currency,
            amount_minor=command.amount_minor, country=command.country,
            pinned_psp=command.psp), closed_loop=closed_loop, unable=unable)
        return decision.order[0], decision

    async def _store(self, command: DepositCommand | WithdrawalCommand, direction: Direction,
                     *, psp: str, routing: RoutingDecision | None = None,
                     fx_quote: FxQuote | None = None) -> tuple[Payment, bool]:
        request = cashier_request(command)
        state = State.CREATED if direction is Direction.DEPOSIT else State.REQUESTED
        # If the request dies half-way and the cashier never retries, the status sync
        # finishes the job (withdrawals) or closes the payment (deposits) from here.
        resume_ms = (self._settings.pending_limit_for(psp)
                     if direction is Direction.DEPOSIT else RESUME_AFTER_MS)
        async with self._connection() as conn:
            created = await store.insert_payment(
                conn, payment_id=new_payment_id(), state=state, client=command.client,
                client_key=command.client_key, request=request, psp=psp,
                payout_destination=getattr(command, "destination", None),
                next_sync_at=self._clock() + timedelta(milliseconds=resume_ms),
                fx=None if fx_quote is None else PaymentFx(quote=fx_quote), routing=routing)
            if created is not None:
                await store.add_history(conn, created, from_state=None, source="api",
                                       note=f"{direction} requested by {command.client}")
                return created, True
            existing = await store.payment_by_client_key(conn, command.client,
                                                        command.client_key)
        assert existing is not None, "unique (client, client_key) row vanished"
        if existing.request != request:
            raise Conflict("Idempotency-Key: already used for a different request")
        return existing, False

    # -- deposits -------------------------------------------------------------------------

    async def create_deposit(self, command: DepositCommand) -> tuple[Payment, bool]:
        psp, routing = await self._route(command, Direction.DEPOSIT)
        self._require_available(psp)
        quote = await self._quote(command) if command.wallet_currency else None
        kyc_currency = command.wallet_currency or command.currency
        kyc_amount = quote.estimated_credit_minor if quote is not None else command.amount_minor
        if quote is not None or not command.wallet_currency:
            # A new request (a retry finds its payment instead): within the player's limits,
            # and past the identity checks (docs/COMPLIANCE.md)?
            if await self._within_limits(command, quote) and self._kyc is not None:
                self._refuse(await self._kyc.deposit_gate(
                    command.player_id, amount_minor=kyc_amount, currency=kyc_currency))
        payment, created = await self._store(command, Direction.DEPOSIT, psp=psp,
                                             routing=routing, fx_quote=quote)
        # Watched on every call, retries included (observing is idempotent): a request whose
        # first look failed is looked at again.
        await self._observe(payment)
        if created and self._kyc is not None:
            # Checked again now that it is stored: deposits started side by side each see
            # the others, so together they can't slip past the threshold.
            gate = await self._kyc.deposit_gate(command.player_id, amount_minor=kyc_amount,
                                                currency=kyc_currency, stored=True)
            if gate is not None:
                await self._finish(payment.id, State.FAILED, f"kyc: {gate.code}",
                                   refusal=Refusal(reason=gate.code, message=gate.message))
                self._refuse(gate)
        if created and routing is not None:
            metrics.ROUTING_ATTEMPTS.labels(psp, "first").inc()
        screening = await self._risk.screen(risk_subject(payment))
        if screening.outcome is Outcome.DENY:
            await self._deny(payment, screening)
        if payment.state is not State.CREATED:
            return payment, created
        if screening.held:
            return await self._hold(payment.id, _review_note(screening), source="api"), created
        return await self.resume_deposit(payment.id, payment_token=command.payment_token), \
            created

    async def _within_limits(self, command: DepositCommand, quote: FxQuote | None) -> bool:
        """Refuses, before anything is stored or sent to a PSP, a deposit the player's
        responsible-gambling limits or break would refuse at credit time (the wallet still
        enforces them then: docs/COMPLIANCE.md). A retry with the same Idempotency-Key keeps
        its payment whatever the limits say since: False for one (nothing was checked)."""
        async with self._connection() as conn:
            if await store.payment_by_client_key(conn, command.client,
                                                command.client_key) is not None:
                return False
        currency = command.wallet_currency or command.currency
        amount = quote.estimated_credit_minor if quote is not None else command.amount_minor
        try:
            # Opened first (the deposit opens it anyway): a new wallet inherits the player's
            # breaks, so a self-excluded player can't get past in a new currency.
            await self._wallet.open_wallet(player_id=command.player_id, currency=currency)
            room = await self._wallet.deposit_room(player_id=command.player_id,
                                                   currency=currency)
        except WalletUnavailable:
            raise Unavailable("the wallet is unavailable; retry with the same "
                              "Idempotency-Key", retry_after_s=1) from None
        except WalletRefused as err:
            raise Refused(f"the wallet refused the deposit: {err.message}",
                          code=err.reason) from None
        if room.blocked:
            what = _BLOCKED.get(room.blocked, "restricted")
            until = ("until the operator lifts it" if room.blocked_until == "lifted"
                     else f"until {room.blocked_until}")
            raise Refused(f"player_id: the player is {what} {until}; deposits are refused",
                          code=room.blocked, field="player_id")
        if room.remaining_minor is not None and amount > room.remaining_minor:
            raise Refused(f"amount_minor: {amount} {currency} is over the player's "
                          f"{room.limit} ({room.remaining_minor} left)",
                          code="LIMIT_EXCEEDED", field="amount_minor")
        return True

    async def _quote(self, command: DepositCommand) -> FxQuote | None:
        """The indicative quote of a deposit paid in another currency, at a fresh rate;
        None when the Idempotency-Key already names a payment (a retry gets what was stored,
        whatever the rate does now). FxRefused / FxUnavailable before anything is stored."""
        async with self._connection() as conn:
            if await store.payment_by_client_key(conn, command.client,
                                                command.client_key) is not None:
                return None
        if self._rates is None:
            raise FxRefused("wallet_currency: currency conversion is not enabled; pay in the "
                            "wallet's currency", code="FX_NOT_ENABLED", field="wallet_currency")
        rate = await self._rates.rate(command.currency, command.wallet_currency)
        spread_bps = self._rates.spread_bps
        estimate = convert(command.amount_minor, currency=command.currency,
                           wallet_currency=command.wallet_currency, rate=rate.value,
                           spread_bps=spread_bps)
        if estimate <= 0:
            raise FxRefused(f"amount_minor: {command.amount_minor} {command.currency} is worth "
                            f"less than one minor unit of {command.wallet_currency}",
                            code="FX_AMOUNT_TOO_SMALL", field="amount_minor")
        return FxQuote(rate=rate.text, pair=rate.pair, source=rate.source, as_of=rate.as_of,
                       spread_bps=spread_bps, estimated_credit_minor=estimate,
                       quoted_at=self._clock())

    async def resume_deposit(self, payment_id: str, *, payment_token: str = "") -> Payment:
        """Sends a stored (or approved) deposit to its PSP; a no-op once it left CREATED.
        A card deposit goes out only with its card token, which the bridge never keeps: an
        approved one waits for the cashier's retry, which brings the token again."""
        payment = await self._current(payment_id)
        if payment.state is not State.CREATED:
            return payment
        if payment.request.payment_token_sha256 and not payment_token:
            return payment
        if not self._adapters[payment.psp].available \
                and (cascaded := await self._cascade(payment, "circuit open",
                                                     reason="circuit_open")):
            return await self.resume_deposit(cascaded.id, payment_token=payment_token)
        adapter = self._require_available(payment.psp)
        request = payment.request
        try:
            await self._wallet.open_wallet(player_id=payment.player_id,
                                           currency=payment.credit_currency)
        except WalletUnavailable:
            raise Unavailable("the wallet is unavailable; retry with the same "
                              "Idempotency-Key", retry_after_s=1) from None
        except WalletRefused as err:
            await self._finish(payment.id, State.FAILED, f"wallet refused: {err.reason}")
            raise Refused(f"wallet refused the deposit: {err.message}",
                          code=err.reason) from None
        if payment_token:
            return await self._charge(payment, adapter, payment_token)
        order = DepositOrder(payment_id=payment.id, player_id=payment.player_id,
                             amount_minor=payment.amount_minor, currency=payment.currency,
                             method=payment.method, pay_currency=request.pay_currency,
                             return_url=request.return_url)
        try:
            instructions = await adapter.create_deposit(order)
        except PspDeclined as err:
            await self._learn(payment, success=False)
            await self._finish(payment.id, State.FAILED, f"the PSP declined: {err.code}")
            raise UpstreamDeclined(f"{payment.psp} declined the deposit: {err.message}") \
                from None
        except PspUnavailable as err:
            return await self._unanswered(payment, err, payment_token="")
        return await self._deposit_created(payment.id, payment.psp, instructions)

    async def _unanswered(self, payment: Payment, err: PspUnavailable, *,
                          payment_token: str) -> Payment:
        """The PSP did not answer: the next PSP in the order gets the deposit, or the cashier
        is told to retry. What the silent PSP did after all is caught later: a checkout it
        opened is never shown, a capture there is refunded (payments/inbox.py)."""
        log.warning("deposit not confirmed by the PSP", extra={
            "payment_id": payment.id, "psp": payment.psp, "error": err.message})
        if err.in_progress:
            # Another call (a cashier retry racing this one) has the same attempt in hand at
            # this PSP, or the PSP is still processing it: its outcome decides. Moving on
            # now could capture the payment at two PSPs.
            raise Unavailable(f"psp: {payment.psp} is still working on this payment; retry "
                              "with the same Idempotency-Key", code="PSP_UNAVAILABLE",
                              field="psp", retry_after_s=1) from None
        await self._learn(payment, success=False)
        if cascaded := await self._cascade(payment, "unavailable", reason="unavailable"):
            return await self.resume_deposit(cascaded.id, payment_token=payment_token)
        if moved := await self._moved_on(payment):
            return await self.resume_deposit(moved.id, payment_token=payment_token)
        raise Unavailable(f"psp: {payment.psp} did not answer; retry with the same "
                          "Idempotency-Key", code="PSP_UNAVAILABLE", field="psp",
                          retry_after_s=1) from None

    async def _moved_on(self, payment: Payment) -> Payment | None:
        """The payment as it is now when another call cascaded it meanwhile (carry on
        there), else None."""
        current = await self._current(payment.id)
        return current if current.psp != payment.psp else None

    async def _charge(self, payment: Payment, adapter: PspAdapter,
                      payment_token: str) -> Payment:
        """Charges the stored card at the payment's PSP (server-to-server, captured at once).
        A soft decline moves the payment to the next PSP with a fresh attempt (its own
        idempotency key); a hard one, or a soft one with no PSP left, closes it as failed
        with the decline on the payment, and nothing is credited."""
        attempt = 1 + (len(payment.routing.attempts) if payment.routing else 0)
        order = ChargeOrder(payment_id=payment.id, player_id=payment.player_id,
                            amount_minor=payment.amount_minor, currency=payment.currency,
                            method=payment.method, attempt=attempt,
                            payment_token=payment_token)
        try:
            reference = await adapter.charge(order)
        except PspUnavailable as err:
            return await self._unanswered(payment, err, payment_token=payment_token)
        except PspDeclined as err:
            await self._learn(payment, success=False)
            kind = "soft" if err.soft else "hard"
            if err.soft and (cascaded := await self._cascade(
                    payment, f"soft decline {err.code}", reason="soft_decline")):
                return await self.resume_deposit(cascaded.id, payment_token=payment_token)
            if moved := await self._moved_on(payment):
                return await self.resume_deposit(moved.id, payment_token=payment_token)
            left = ", no PSP left to try" if err.soft else ""
            await self._finish(payment.id, State.FAILED,
                               f"{payment.psp} declined the card: {err.code} ({kind}{left})",
                               refusal=Refusal(reason="PAYMENT_DECLINED",
                                               message=f"{payment.psp} declined the card "
                                                       f"({kind} decline {err.code})"))
            return await self._current(payment.id)
        return await self._charged(payment.id, payment.psp, reference)

    async def _charged(self, payment_id: str, psp: str, reference: str) -> Payment:
        """Keeps a capture at `psp` and hands it to the inbox, which credits the wallet once
        (the PSP's own webhook for it is then a duplicate). When the payment left `psp`
        while it was charged (a cascade raced this call), the capture is owed back there."""
        async with self._transaction() as conn:
            found = await store.payment(conn, payment_id, lock=True)
            assert found is not None
            closed = found.state in (State.FAILED, State.EXPIRED) and found.settled_minor == 0
            if found.psp != psp or closed:
                # Moved on (a cascade raced this call), or closed by the status sync while
                # the PSP took its time: the cashier was told otherwise, so it goes back.
                where = (f"after it moved to {found.psp}" if found.psp != psp
                         else f"after the deposit was closed as {found.state}")
                note = f"{psp} captured this payment as {reference} {where}; not credited here"
                owed = await store.owe_refund(conn, payment_id=found.id, psp=psp,
                                              psp_reference=reference,
                                              amount_minor=found.amount_minor,
                                              currency=found.currency)
                if owed is not None:
                    found = refund_owed(found, psp, f"{note}; refund {owed} queued")
                    await store.save(conn, found)
                await store.add_history(conn, found, from_state=found.state, source="api",
                                        note=note)
                return found
            p = found
            if found.state is State.CREATED:
                # A fast webhook may already have moved it on; then only the event follows.
                p = replace(found, state=State.PENDING,
                            psp_reference=found.psp_reference or reference,
                            next_sync_at=self._clock() + timedelta(
                                milliseconds=self._settings.pending_limit_for(psp)))
                await store.save(conn, p)
                await store.add_history(conn, p, from_state=found.state, source="api",
                                        note=f"card charged at {psp} as {reference}")
            await store.insert_event(conn, PspEvent(
                psp=psp, event_key=f"bridge:charged:{payment_id}:{reference}",
                kind=EventKind.DEPOSIT_SUCCEEDED, psp_event_type="charge captured",
                payment_id=payment_id, psp_reference=reference,
                amount_minor=found.amount_minor, currency=found.currency), source="bridge")
        self._wake_inbox()
        return p

    async def _learn(self, p: Payment, *, success: bool) -> None:
        """An outcome of `p` at its PSP, for routing (on a connection of its own: the payment
        itself did not change)."""
        if self._router is None or p.routing is None:
            return
        async with self._connection() as conn:
            await self._router.record(conn, psp=p.psp, method=p.method, currency=p.currency,
                                      success=success)

    async def _cascade(self, p: Payment, why: str, *, reason: str) -> Payment | None:
        """Moves a routed deposit that no PSP has taken yet to the next PSP in its routing
        order (the PSP it leaves is an attempt on the payment, and its answers for this
        payment are flagged, never credited: payments/inbox.py). None when nothing is left
        to try, the cashier named the PSP, or the payment moved on meanwhile.

        Only deposits cascade, and only before the player was sent anywhere: the abandoned
        PSP may have opened a checkout nobody will see. A payout never does: the first PSP
        may have accepted it, and a second would pay the player twice."""
        if p.routing is None or p.routing.pinned or p.direction is not Direction.DEPOSIT:
            return None
        nxt = p.routing.next_after(p.psp, attempts_max=self._attempts_max)
        if nxt is None:
            return None
        async with self._transaction() as conn:
            found = await store.payment(conn, p.id, lock=True)
            if found is None or found.state is not State.CREATED or found.psp != p.psp \
                    or found.routing is None:
                return None
            # The next PSP gets its own pending limit: a chain of slow attempts must not run
            # into the status sync closing the payment under it.
            moved = replace(found, psp=nxt, routing=replace(
                found.routing, attempts=(*found.routing.attempts, Attempt(found.psp, why))),
                next_sync_at=self._clock() + timedelta(
                    milliseconds=self._settings.pending_limit_for(nxt)))
            await store.save(conn, moved)
            await store.add_history(conn, moved, from_state=found.state, source="api",
                                    note=f"cascaded from {found.psp} ({why}) to {nxt}")
        metrics.ROUTING_ATTEMPTS.labels(nxt, "cascade").inc()
        metrics.ROUTING_CASCADES.labels(p.psp, reason).inc()
        return moved

    async def _deposit_created(self, payment_id: str, psp: str,
                               instructions: DepositInstructions) -> Payment:
        """Keeps what `psp` answered for the payment, unless the payment left `psp` while it
        was asked (another call cascaded it): that checkout is never shown, and a payment
        made at it is flagged for a refund there (payments/inbox.py)."""
        async with self._transaction() as conn:
            found = await store.payment(conn, payment_id, lock=True)
            assert found is not None
            if found.psp != psp:
                await store.add_history(
                    conn, found, from_state=found.state, source="api",
                    note=f"{psp} answered after the deposit moved to {found.psp}: its "
                         f"checkout {instructions.psp_reference} is not used")
                return found
            p = replace(found, psp_reference=found.psp_reference or instructions.psp_reference,
                        instructions=instructions)
            if found.state is State.CREATED:
                # A fast webhook may already have moved it on; then only the references land.
                p = replace(p, state=State.PENDING, next_sync_at=self._clock() + timedelta(
                    milliseconds=self._settings.pending_limit_for(p.psp)))
            await store.save(conn, p)
            if found.state is State.CREATED:
                await store.add_history(conn, p, from_state=found.state, source="api",
                                        note=f"created at {p.psp} as "
                                             f"{instructions.psp_reference}")
        return p

    # -- risk -------------------------------------------------------------------------------

    async def screening(self, payment_id: str) -> Screening | None:
        return await self._risk.stored(payment_id)

    async def _deny(self, payment: Payment, screening: Screening) -> None:
        """Closes a denied payment before it reached the wallet or the PSP (once; a retry
        finds it closed) and raises the denial with its reasons."""
        reasons = screening.reasons
        refusal = Refusal(reason=RiskDenied.code, message="refused by the risk rules",
                          rules=tuple(r.code for r in reasons))
        state = State.FAILED if payment.direction is Direction.DEPOSIT else State.REJECTED
        await self._finish(payment.id, state, f"risk: denied ({', '.join(refusal.rules)})",
                           refusal=refusal)
        raise RiskDenied(payment_id=payment.id, reasons=reasons)

    async def _hold(self, payment_id: str, attention: str, *, source: str) -> Payment:
        """Parks a payment for support: unscheduled, so the status sync neither closes a
        held deposit nor pays out a held withdrawal, and named in `attention` (a risk review,
        or an open AML case)."""
        async with self._transaction() as conn:
            return await self._park(conn, payment_id, attention, source=source,
                                    states=(State.CREATED, State.RESERVED),
                                    note=f"held for support ({attention})")

    @staticmethod
    async def _park(conn: asyncpg.Connection, payment_id: str, attention: str, *,
                    source: str, states: tuple[State, ...], note: str) -> Payment:
        """The hold itself, in the caller's transaction: the payment locked, named in
        `attention` and unscheduled (unless it left `states` or is held so already)."""
        found = await store.payment(conn, payment_id, lock=True)
        assert found is not None
        if found.state not in states or found.attention == attention:
            return found
        p = replace(found, attention=attention, next_sync_at=None)
        await store.save(conn, p)
        await store.add_history(conn, p, from_state=p.state, source=source, note=note)
        return p

    async def _finish(self, payment_id: str, state: State, note: str, *,
                      refusal: Refusal | None = None) -> None:
        async with self._transaction() as conn:
            found = await store.payment(conn, payment_id, lock=True)
            assert found is not None
            if found.state not in (State.CREATED, State.REQUESTED):
                return
            p = replace(found, state=state, next_sync_at=None)
            if refusal is not None:
                p = replace(p, refusal=refusal, payout_destination=None)
            await store.save(conn, p)
            await store.add_history(conn, p, from_state=found.state, source="api", note=note)

    # -- withdrawals ----------------------------------------------------------------------

    async def _aml_hold(self, payment_id: str, player_id: str, *,
                        source: str) -> Payment | None:
        """Holds a reserved withdrawal while an AML case of a holding rule is open (None
        when none is). Under the player's AML lock, which an analyst's release also takes:
        a case cleared at the same time either sees this hold and releases it, or is seen
        closed here."""
        async with self._transaction() as conn:
            await aml_store.lock_player(conn, player_id)
            cases = await aml_store.holding_cases(conn, player_id)
            if not cases:
                return None
            attention = "aml hold: case " + ", ".join(str(c) for c in cases)
            return await self._park(conn, payment_id, attention, source=source,
                                    states=(State.RESERVED,),
                                    note=f"held for AML ({attention})")

    async def _observe(self, p: Payment) -> None:
        """AML monitoring of a new payment: its hits open cases for analysts
        (gateway_bridge.aml); a case that holds stops the player's withdrawals in
        _advance."""
        if self._aml is not None:
            await self._aml.observe(payment_id=p.id, player_id=p.player_id,
                                    direction=p.direction, currency=p.currency,
                                    amount_minor=p.amount_minor)

    @staticmethod
    def _refuse(gate: Gate | None) -> None:
        """A KYC gate's refusal, before anything is stored (422 with its reason)."""
        if gate is not None:
            raise Refused(f"player_id: {gate.message}", code=gate.code, field="player_id")

    async def create_withdrawal(self, command: WithdrawalCommand) -> tuple[Payment, bool]:
        psp, routing = await self._route(command, Direction.WITHDRAWAL)
        self._require_available(psp)
        if self._kyc is not None:
            async with self._connection() as conn:
                stored = await store.payment_by_client_key(conn, command.client,
                                                           command.client_key)
            if stored is None:  # a retry keeps its payment whatever the player's state now
                self._refuse(await self._kyc.withdrawal_gate(command.player_id))
        payment, created = await self._store(command, Direction.WITHDRAWAL, psp=psp,
                                             routing=routing)
        if created and routing is not None:
            metrics.ROUTING_ATTEMPTS.labels(psp, "first").inc()
        screening = await self._risk.screen(risk_subject(payment))
        if screening.outcome is Outcome.DENY:
            await self._deny(payment, screening)
        payment = await self._advance(payment.id, screening, source="api")
        if payment.refusal is not None:
            raise Refused(f"the withdrawal was refused: {payment.refusal.message}",
                          code=payment.refusal.reason)
        return payment, created

    async def advance_withdrawal(self, payment_id: str, *, source: str) -> Payment:
        """Drives requested -> reserved -> payout_pending as far as it can go now, as the
        risk decision allows: a denied one is closed, a held one stops at reserved."""
        p = await self._current(payment_id)
        screening = await self._risk.screen(risk_subject(p))
        if screening.outcome is Outcome.DENY:
            with contextlib.suppress(RiskDenied):
                await self._deny(p, screening)
            return await self._current(payment_id)
        return await self._advance(payment_id, screening, source=source)

    async def _advance(self, payment_id: str, screening: Screening, *,
                       source: str) -> Payment:
        p = await self._reserve(payment_id, source=source)
        if p.state is State.RESERVED:
            if screening.held:
                return await self._hold(p.id, _review_note(screening), source=source)
            if self._aml is not None:
                # Looked at before every payout attempt (idempotent), so a withdrawal the
                # status sync drives is watched too; then held while a case holds.
                await self._observe(p)
                if (held := await self._aml_hold(p.id, p.player_id, source=source)) \
                        is not None:
                    return held
            p = await self._request_payout(p, source=source)
        return p

    async def _reserve(self, payment_id: str, *, source: str) -> Payment:
        async with self._transaction() as conn:
            found = await store.payment(conn, payment_id, lock=True)
            if found is None:
                raise NotFound(f"payment {payment_id} not found")
            if found.state is not State.REQUESTED:
                return found
            try:
                withdrawal_id = await self._wallet.reserve(
                    player_id=found.player_id, currency=found.currency,
                    amount_minor=found.amount_minor, psp=found.psp,
                    key=wallet_key(Action.RESERVE, found.id))
                # The payout request follows now; the status sync must not start a second
                # one while this one may still be retrying at the PSP.
                p = replace(found, withdrawal_id=withdrawal_id, state=State.RESERVED,
                            next_sync_at=self._clock() + timedelta(milliseconds=(
                                RESUME_AFTER_MS
                                + psp_call_budget_ms(self._psps[found.psp]))))
                note = f"reserved in the wallet ({withdrawal_id})"
            except WalletUnavailable:
                p = replace(found, next_sync_at=self._clock() + timedelta(
                    milliseconds=RESUME_AFTER_MS))
                await store.save(conn, p)
                if source == "api":
                    raise Unavailable("the wallet is unavailable; retry with the same "
                                      "Idempotency-Key", retry_after_s=1) from None
                return p
            except WalletRefused as err:
                p = replace(found, state=State.REJECTED, next_sync_at=None,
                            payout_destination=None,
                            refusal=Refusal(reason=err.reason, message=err.message[:500]))
                note = f"wallet refused: {err.reason}"
            await store.save(conn, p)
            await store.add_history(conn, p, from_state=found.state, source=source, note=note)
            return p

    async def _request_payout(self, p: Payment, *, source: str) -> Payment:
        adapter = self._adapters[p.psp]
        order = PayoutOrder(payment_id=p.id, player_id=p.player_id, amount_minor=p.amount_minor,
                            currency=p.currency, method=p.method,
                            destination=p.payout_destination or "")
        try:
            # No row lock held here: a PSP call can take seconds, and two concurrent
            # attempts carry the same Idempotency-Key, so the PSP creates one payout.
            reference = await adapter.create_payout(order)
        except PspDeclined as err:
            await self._record_decline(p, err)
            return await self._current(p.id)
        except PspUnavailable as err:
            log.warning("payout not confirmed by the PSP", extra={
                "payment_id": p.id, "psp": p.psp, "error": err.message})
            return p  # stays reserved; the status sync asks again with the same key
        async with self._transaction() as conn:
            found = await store.payment(conn, p.id, lock=True)
            assert found is not None
            # Accepted at the PSP: the destination is no longer needed.
            current = replace(found, psp_reference=found.psp_reference or reference,
                              payout_destination=None)
            if found.state is State.RESERVED:
                current = replace(current, state=State.PAYOUT_PENDING,
                                  next_sync_at=self._clock() + timedelta(
                                      milliseconds=self._settings.pending_limit_for(p.psp)))
            await store.save(conn, current)
            if found.state is State.RESERVED:
                await store.add_history(conn, current, from_state=found.state, source=source,
                                        note=f"payout requested at {p.psp} as {reference}")
            return current

    async def _record_decline(self, p: Payment, err: PspDeclined) -> None:
        """The PSP refused the payout outright: release the reserve through the inbox, so
        the wallet call gets the inbox's retries and dead-letter like any other event."""
        event = PspEvent(psp=p.psp, event_key=f"bridge:payout-declined:{p.id}",
                         kind=EventKind.PAYOUT_FAILED,
                         psp_event_type=f"payout request declined ({err.code})",
                         payment_id=p.id)
        async with self._connection() as conn:
            await store.insert_event(conn, event, source="bridge")
        self._wake_inbox()

    async def _current(self, payment_id: str) -> Payment:
        async with self._connection() as conn:
            p = await store.payment(conn, payment_id)
        if p is None:
            raise NotFound(f"payment {payment_id} not found")
        return p

    # -- reads ----------------------------------------------------------------------------

    async def with_refunds(self, payment_id: str, *, client: str | None = None,
                           ) -> tuple[Payment, list[dict[str, Any]], list[PspRefund]]:
        """The payment, its history and its refunds as of one instant: a refund settled
        and the note it clears are written together, so a reader sees both or neither."""
        async with self._connection() as conn, \
                conn.transaction(isolation="repeatable_read", readonly=True):
            p = await store.payment(conn, payment_id)
            if p is None or (client is not None and p.client != client):
                raise NotFound("payment_id: no such payment")
            return p, await store.history(conn, payment_id), await store.refunds_of(conn, p.id)

    async def get(self, payment_id: str, *, client: str | None = None,
                  ) -> tuple[Payment, list[dict[str, Any]]]:
        async with self._connection() as conn:
            p = await store.payment(conn, payment_id)
            if p is None or (client is not None and p.client != client):
                raise NotFound("payment_id: no such payment")
            return p, await store.history(conn, payment_id)
