r"""The payment: its typed record, its states, the one function that decides what a PSP event
does to it (`decide`), and the bookkeeping that follows an applied decision (`apply`).

A deposit:    created -> pending -> processing -> succeeded -> charged_back
                                              \-> failed | expired | mismatch | partially_paid
A withdrawal: requested -> reserved -> payout_pending -> paid -> reversed
                       \-> rejected          \-> payout_failed

Terminal states are never left, with two exceptions the money demands: a succeeded deposit
can still be charged back, and a paid payout can still come back (Stripe documents payouts
that show `paid` and later turn `failed`). `timed_out` is where support finds
a payment nobody answered for; it is not terminal, because a late answer is still the truth.

Events that arrive too early to apply (a reversal before the payout is reported paid, a
chargeback before the capture) are deferred and retried, so reordered delivery ends in the
same state as ordered delivery. Events that arrive too late are recorded and ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from gateway_bridge.routing.rules import RoutingDecision
from gateway_bridge.shared.events import EventKind, PspEvent
from gateway_bridge.shared.terms import DepositInstructions, Direction


class State(StrEnum):
    CREATED = "created"                # stored; the PSP has not confirmed the payment yet
    PENDING = "pending"                # created at the PSP, waiting for the payer
    PROCESSING = "processing"          # the PSP sees funds moving (crypto confirmations)
    SUCCEEDED = "succeeded"            # credited to the wallet
    FAILED = "failed"
    EXPIRED = "expired"
    PARTIALLY_PAID = "partially_paid"  # crypto: less arrived; credited only if policy says so
    MISMATCH = "mismatch"              # amount/currency differs from ours: held for support
    CHARGED_BACK = "charged_back"
    REQUESTED = "requested"            # stored; the wallet reserve is not confirmed yet
    REJECTED = "rejected"              # the wallet refused the reserve
    RESERVED = "reserved"              # funds held; the PSP has not accepted the payout yet
    PAYOUT_PENDING = "payout_pending"  # the PSP accepted the payout
    PAID = "paid"                      # the withdrawal is committed in the wallet
    PAYOUT_FAILED = "payout_failed"    # the reserve went back to cash
    REVERSED = "reversed"              # paid, then returned: the money is back in cash
    TIMED_OUT = "timed_out"            # nobody answered within the limits: support decides


OPEN_DEPOSIT = frozenset({State.CREATED, State.PENDING, State.PROCESSING, State.TIMED_OUT})
OPEN_PAYOUT = frozenset({State.RESERVED, State.PAYOUT_PENDING, State.TIMED_OUT})
# States the status sync polls the PSP for, and the withdrawal steps it drives on.
SYNCED = frozenset({State.CREATED, State.PENDING, State.PROCESSING, State.REQUESTED,
                    State.RESERVED, State.PAYOUT_PENDING})
# States that ask a person to look, whatever the events say later.
NEEDS_SUPPORT = frozenset({State.MISMATCH, State.PARTIALLY_PAID, State.TIMED_OUT})


class Action(StrEnum):
    """Wallet calls an event can cause."""

    DEPOSIT = "deposit"
    RESERVE = "reserve"
    COMMIT = "commit"
    CANCEL = "cancel"
    REVERSE = "reverse"
    CHARGEBACK = "chargeback"


class Verdict(StrEnum):
    APPLY = "apply"    # change state (and maybe call the wallet)
    IGNORE = "ignore"  # duplicate, late or irrelevant: record and drop
    DEFER = "defer"    # too early: try again later


@dataclass(frozen=True, slots=True)
class PaymentFacts:
    """What the rules need to know about a stored payment."""

    direction: Direction
    state: State
    amount_minor: int
    currency: str
    # What the wallet moved for this payment so far: credited, and charged back.
    settled_minor: int = 0
    charged_back_minor: int = 0
    # A card the bridge charges itself (server-to-server): its declines come in the PSP's
    # answer, which the cashier acts on (a soft one cascades to the next PSP).
    charged: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    note: str
    state: State | None = None
    action: Action | None = None
    amount_minor: int = 0
    # Ignored, and the money the event says the PSP took is owed back there.
    refund_capture: bool = False

    @staticmethod
    def ignore(note: str) -> Decision:
        return Decision(Verdict.IGNORE, note)

    @staticmethod
    def defer(note: str) -> Decision:
        return Decision(Verdict.DEFER, note)


def decide(p: PaymentFacts, e: PspEvent, *, credit_partial: bool) -> Decision:
    if e.kind is EventKind.IGNORED:
        return Decision.ignore(f"{e.psp_event_type}: not an event we act on")
    if p.direction is Direction.DEPOSIT:
        return _deposit(p, e, credit_partial=credit_partial)
    return _withdrawal(p, e)


def _apply(state: State, note: str, action: Action | None = None,
           amount_minor: int = 0) -> Decision:
    return Decision(Verdict.APPLY, note, state, action, amount_minor)


def _differs(p: PaymentFacts, e: PspEvent) -> str | None:
    """Why the event's money is not the payment's, or None when it matches."""
    if e.currency is not None and e.currency != p.currency:
        return f"currency {e.currency} differs from the payment's {p.currency}"
    if e.amount_minor is None:
        return "the event carries no amount"
    if e.amount_minor != p.amount_minor:
        return f"amount {e.amount_minor} differs from the payment's {p.amount_minor} (minor units)"
    return None


def _deposit(p: PaymentFacts, e: PspEvent, *, credit_partial: bool) -> Decision:
    k, s = e.kind, p.state
    if k is EventKind.CHARGEBACK:
        return _chargeback(p, e)
    if k not in (EventKind.DEPOSIT_PENDING, EventKind.DEPOSIT_SUCCEEDED,
                 EventKind.DEPOSIT_PARTIAL, EventKind.DEPOSIT_FAILED, EventKind.DEPOSIT_EXPIRED):
        return Decision.ignore(f"{k}: not a deposit event")
    if s not in OPEN_DEPOSIT:
        return _late_deposit_event(p, e)
    if k is EventKind.DEPOSIT_PENDING:
        if s is State.PROCESSING:
            return Decision.ignore("already processing")
        return _apply(State.PROCESSING, "the PSP sees the payment")
    if k is EventKind.DEPOSIT_SUCCEEDED:
        why = _differs(p, e)
        if why:
            return _apply(State.MISMATCH, f"not credited: {why}")
        return _apply(State.SUCCEEDED, "captured", Action.DEPOSIT, p.amount_minor)
    if k is EventKind.DEPOSIT_PARTIAL:
        return _partial(p, e, credit_partial=credit_partial)
    if k is EventKind.DEPOSIT_FAILED:
        if p.charged and s is State.CREATED:
            # The webhook of a declined charge can beat the answer the cashier acts on; a
            # soft decline moves the payment on to the next PSP instead of failing it.
            return Decision.ignore("a charge's decline is decided from the PSP's answer")
        return _apply(State.FAILED, f"the PSP reports {e.psp_event_type}")
    return _apply(State.EXPIRED, "the payer did not pay in time")


def _late_deposit_event(p: PaymentFacts, e: PspEvent) -> Decision:
    """A final answer that contradicts the final state we hold is never applied blindly:
    money captured after we closed the deposit, or refunded after we credited it, is named a
    conflict so support sees it (the payment's `attention`)."""
    k, s = e.kind, p.state
    if k is EventKind.DEPOSIT_SUCCEEDED and s in (State.FAILED, State.EXPIRED) \
            and p.charged and p.settled_minor == 0:
        # The bridge closed this charge (no answer in time) and the cashier was told so:
        # the card is given back rather than credited behind the player's back.
        return Decision(Verdict.IGNORE, f"the PSP reports the card charged after the "
                                        f"deposit was {s}; refunded, not credited",
                        refund_capture=True)
    if k is EventKind.DEPOSIT_SUCCEEDED and s in (State.FAILED, State.EXPIRED):
        return Decision.ignore(f"conflict: the PSP reports the deposit captured after it was "
                               f"{s}; not credited automatically, needs support")
    if k is EventKind.DEPOSIT_FAILED and p.settled_minor > 0:
        return Decision.ignore(f"conflict: the PSP reports {e.psp_event_type} after the "
                               "deposit was credited; needs support")
    return Decision.ignore(f"late {k}: the deposit is already {s}")


def _partial(p: PaymentFacts, e: PspEvent, *, credit_partial: bool) -> Decision:
    if e.currency is not None and e.currency != p.currency:
        return _apply(State.MISMATCH, f"not credited: currency {e.currency} differs from "
                                      f"the payment's {p.currency}")
    received = e.received_minor or 0
    if not credit_partial:
        return _apply(State.PARTIALLY_PAID, f"{received} of {p.amount_minor} arrived; "
                                            "held for support (partial payments not credited)")
    if not 0 < received < p.amount_minor:
        return _apply(State.MISMATCH, f"not credited: partial amount {received} is outside "
                                      f"1..{p.amount_minor - 1}")
    return _apply(State.PARTIALLY_PAID, f"{received} of {p.amount_minor} arrived; credited "
                                        "what arrived", Action.DEPOSIT, received)


def _chargeback(p: PaymentFacts, e: PspEvent) -> Decision:
    if p.state in OPEN_DEPOSIT:
        return Decision.defer(f"chargeback before the deposit was captured (state {p.state})")
    if p.state not in (State.SUCCEEDED, State.PARTIALLY_PAID, State.CHARGED_BACK):
        return Decision.ignore(f"chargeback on a deposit that was never credited ({p.state})")
    if not e.dispute_reference:
        return Decision.ignore("chargeback without a dispute reference")
    if e.currency is not None and e.currency != p.currency:
        return Decision.ignore(f"chargeback in {e.currency} on a {p.currency} deposit: "
                               "needs support")
    # Never debit more than this payment put into the wallet and is still there to take.
    remaining = p.settled_minor - p.charged_back_minor
    if remaining <= 0:
        return Decision.ignore(f"conflict: dispute {e.dispute_reference} on a deposit with "
                               "nothing left to charge back; needs support")
    asked = e.amount_minor if e.amount_minor is not None else remaining
    if asked <= 0:
        return Decision.ignore("chargeback without a positive amount")
    note = f"dispute {e.dispute_reference}"
    if asked > remaining:
        note += f": {asked} asked, capped at the {remaining} credited and not yet charged back"
    return _apply(State.CHARGED_BACK, note, Action.CHARGEBACK, min(asked, remaining))


def _withdrawal(p: PaymentFacts, e: PspEvent) -> Decision:
    k, s = e.kind, p.state
    if k not in (EventKind.PAYOUT_PENDING, EventKind.PAYOUT_PAID, EventKind.PAYOUT_FAILED,
                 EventKind.PAYOUT_REVERSED):
        return Decision.ignore(f"{k}: not a payout event")
    if s is State.REQUESTED:
        return Decision.defer("payout event before the reserve is confirmed")
    if k is EventKind.PAYOUT_PENDING:
        if s is State.RESERVED:
            return _apply(State.PAYOUT_PENDING, "the PSP accepted the payout")
        return Decision.ignore(f"late {k}: the withdrawal is {s}")
    if k is EventKind.PAYOUT_PAID:
        if s in OPEN_PAYOUT:
            why = _differs(p, e) if e.amount_minor is not None else None
            if why:
                # The funds stay reserved and the payout open, so a corrected event or
                # support can still finish it.
                return Decision.ignore(f"conflict: paid but {why}; not committed, needs "
                                       "support")
            return _apply(State.PAID, "paid out", Action.COMMIT)
        if s in (State.PAYOUT_FAILED, State.REVERSED):
            return Decision.ignore(f"conflict: the PSP reports paid after {s}; needs support")
        return Decision.ignore(f"late {k}: the withdrawal is {s}")
    if k is EventKind.PAYOUT_FAILED:
        if s in OPEN_PAYOUT:
            return _apply(State.PAYOUT_FAILED, f"the PSP reports {e.psp_event_type}",
                          Action.CANCEL)
        if s is State.PAID:
            return _apply(State.REVERSED, "failed after it was reported paid", Action.REVERSE)
        return Decision.ignore(f"late {k}: the withdrawal is {s}")
    # PAYOUT_REVERSED
    if s is State.PAID:
        return _apply(State.REVERSED, "returned after it was paid", Action.REVERSE)
    if s in OPEN_PAYOUT:
        return Decision.defer("reversal before the payout was reported paid")
    return Decision.ignore(f"late {k}: the withdrawal is {s}")


def wallet_key(action: Action, payment_id: str, dispute_reference: str | None = None) -> str:
    """The wallet idempotency key of an action: derived from the payment (and dispute) ids,
    so every retry, duplicate webhook or restarted bridge asks for the same effect."""
    if action is Action.CHARGEBACK:
        return f"bridge:chargeback:{payment_id}:{dispute_reference}"
    return f"bridge:{action}:{payment_id}"


# --- the stored payment and its parts -------------------------------------------------------
#
# Frozen: a use case never edits a payment in place, it derives the next one (dataclasses
# .replace, or the functions below) and saves that. The JSON columns (request, instructions,
# refusal, fx) keep the shapes they had as plain dicts, so stored rows and API views read the
# same; `to_json` writes them and `from_json` reads them back.

# Optional request fields are stored only when sent, so requests stored before they existed
# still match their retries (the Idempotency-Key comparison).
_OPTIONAL_REQUEST_FIELDS = ("instrument_id", "country", "wallet_currency")
# A stored card a deposit is charged with, like a payout destination: only its digest.
_PAYMENT_TOKEN_KEY = "payment_token"


@dataclass(frozen=True, slots=True, kw_only=True)
class CashierRequest:
    """What the cashier asked for, as compared when the same Idempotency-Key comes again.
    A payout destination is kept only as its SHA-256 here; the clear value lives in its own
    column until the PSP has accepted the payout, and is erased then."""

    direction: Direction
    player_id: str
    amount_minor: int
    currency: str
    psp: str
    method: str
    pay_currency: str = ""
    return_url: str = ""
    instrument_id: str = ""
    country: str = ""
    wallet_currency: str = ""
    destination_sha256: str = ""
    payment_token_sha256: str = ""

    @staticmethod
    def destination_digest(destination: str) -> str:
        return hashlib.sha256(destination.encode()).hexdigest()

    @staticmethod
    def token_digest(payment_token: str) -> str:
        return hashlib.sha256(payment_token.encode()).hexdigest() if payment_token else ""

    def to_json(self) -> dict[str, Any]:
        values: dict[str, Any] = {"player_id": self.player_id, "amount_minor": self.amount_minor,
                                  "currency": self.currency, "psp": self.psp,
                                  "method": self.method}
        if self.direction is Direction.DEPOSIT:
            values.update(pay_currency=self.pay_currency, return_url=self.return_url)
        else:
            values["destination"] = self.destination_sha256
        for name in _OPTIONAL_REQUEST_FIELDS:
            if value := getattr(self, name):
                values[name] = value
        if self.payment_token_sha256:
            values[_PAYMENT_TOKEN_KEY] = self.payment_token_sha256
        return values

    @classmethod
    def from_json(cls, direction: Direction, d: Mapping[str, Any]) -> CashierRequest:
        return cls(direction=direction, player_id=str(d["player_id"]),
                   amount_minor=int(d["amount_minor"]), currency=str(d["currency"]),
                   psp=str(d["psp"]), method=str(d["method"]),
                   pay_currency=str(d.get("pay_currency") or ""),
                   return_url=str(d.get("return_url") or ""),
                   instrument_id=str(d.get("instrument_id") or ""),
                   country=str(d.get("country") or ""),
                   wallet_currency=str(d.get("wallet_currency") or ""),
                   destination_sha256=str(d.get("destination") or ""),
                   payment_token_sha256=str(d.get(_PAYMENT_TOKEN_KEY) or ""))


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Why a payment was closed before money moved: the wallet's or the risk rules' reason."""

    reason: str
    message: str
    rules: tuple[str, ...] = ()  # the risk rules that denied it

    def to_json(self) -> dict[str, Any]:
        values: dict[str, Any] = {"reason": self.reason, "message": self.message}
        if self.rules:
            values["rules"] = list(self.rules)
        return values

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Refusal:
        return cls(reason=str(d["reason"]), message=str(d["message"]),
                   rules=tuple(str(r) for r in d.get("rules", ())))


def instructions_to_json(i: DepositInstructions) -> dict[str, Any]:
    return {"psp_reference": i.psp_reference, "checkout_url": i.checkout_url,
            "pay_address": i.pay_address, "pay_amount": i.pay_amount,
            "pay_currency": i.pay_currency}


def instructions_from_json(d: Mapping[str, Any]) -> DepositInstructions:
    return DepositInstructions(
        psp_reference=str(d.get("psp_reference") or ""),
        checkout_url=str(d.get("checkout_url") or ""),
        pay_address=str(d.get("pay_address") or ""), pay_amount=str(d.get("pay_amount") or ""),
        pay_currency=str(d.get("pay_currency") or ""))


@dataclass(frozen=True, slots=True, kw_only=True)
class FxQuote:
    """The indicative quote a converted deposit was started with (docs/FX.md)."""

    rate: str  # the provider's decimal text, wallet units per paid unit
    pair: str  # PAID/WALLET
    source: str
    as_of: datetime
    spread_bps: int
    estimated_credit_minor: int
    quoted_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"rate": self.rate, "pair": self.pair, "source": self.source,
                "as_of": self.as_of.isoformat(), "spread_bps": self.spread_bps,
                "estimated_credit_minor": self.estimated_credit_minor,
                "quoted_at": self.quoted_at.isoformat()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FxQuote:
        return cls(rate=str(d["rate"]), pair=str(d["pair"]), source=str(d["source"]),
                   as_of=datetime.fromisoformat(d["as_of"]), spread_bps=int(d["spread_bps"]),
                   estimated_credit_minor=int(d["estimated_credit_minor"]),
                   quoted_at=datetime.fromisoformat(d["quoted_at"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class FxCredit:
    """The conversion a converted deposit was credited with: the pinned rate and both sides."""

    rate: str
    pair: str
    source: str
    as_of: datetime
    spread_bps: int
    paid_minor: int
    credited_minor: int

    def to_json(self) -> dict[str, Any]:
        return {"rate": self.rate, "pair": self.pair, "source": self.source,
                "as_of": self.as_of.isoformat(), "spread_bps": self.spread_bps,
                "paid_minor": self.paid_minor, "credited_minor": self.credited_minor}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FxCredit:
        return cls(rate=str(d["rate"]), pair=str(d["pair"]), source=str(d["source"]),
                   as_of=datetime.fromisoformat(d["as_of"]), spread_bps=int(d["spread_bps"]),
                   paid_minor=int(d["paid_minor"]), credited_minor=int(d["credited_minor"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentFx:
    """A converted deposit's FX record: its quote, its credit, and what chargebacks took
    back in the wallet's currency (`charged_back_minor` of the payment counts the paid one)."""

    quote: FxQuote | None = None
    credit: FxCredit | None = None
    # None until a chargeback was applied (then written, even when it took nothing).
    charged_back_wallet_minor: int | None = None

    def to_json(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self.quote is not None:
            values["quote"] = self.quote.to_json()
        if self.credit is not None:
            values["credit"] = self.credit.to_json()
        if self.charged_back_wallet_minor is not None:
            values["charged_back_wallet_minor"] = self.charged_back_wallet_minor
        return values

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PaymentFx:
        quote, credit = d.get("quote"), d.get("credit")
        return cls(quote=FxQuote.from_json(quote) if quote else None,
                   credit=FxCredit.from_json(credit) if credit else None,
                   charged_back_wallet_minor=(
                       None if (taken := d.get("charged_back_wallet_minor")) is None
                       else int(taken)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Payment:
    """A stored payment (bridge.payments). `currency`/`amount_minor` are what the PSP is asked
    for; a converted deposit credits `wallet_currency` instead (docs/FX.md)."""

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
    request: CashierRequest
    payout_destination: str | None
    instructions: DepositInstructions | None
    refusal: Refusal | None
    attention: str | None
    sync_attempts: int
    next_sync_at: datetime | None
    created_at: datetime
    updated_at: datetime
    wallet_currency: str | None = None
    fx: PaymentFx | None = None
    routing: RoutingDecision | None = None  # None: the cashier named the PSP, routing off

    @property
    def credit_currency(self) -> str:
        """The wallet currency this payment moves money in."""
        return self.wallet_currency or self.currency

    def facts(self) -> PaymentFacts:
        return PaymentFacts(self.direction, self.state, self.amount_minor, self.currency,
                            self.settled_minor, self.charged_back_minor,
                            charged=bool(self.request.payment_token_sha256))


# --- bookkeeping after a decision -------------------------------------------------------------

# An attention note that says an inbox event was dead-lettered stays until support acts;
# other notes (a timeout, a conflict) are answered by the next final word from the PSP.
_DEAD_LETTER_PREFIX = "event "
# So does a refund owed at a PSP the payment left (refund_owed): money taken there stays
# support's until refunded, whatever the payment does after.
_REFUND_OWED_PREFIX = "refund owed"
_REFUND_FAILED_PREFIX = "refund failed"
_STICKY = (_DEAD_LETTER_PREFIX, _REFUND_OWED_PREFIX, _REFUND_FAILED_PREFIX)
# Between the notes a payment collects for support (a note may hold "; " itself).
_NOTES_SEPARATOR = " | "


def apply(p: Payment, d: Decision, e: PspEvent, *, fx: PaymentFx | None = None) -> Payment:
    """The payment after an applied decision (its wallet call, if any, succeeded): the new
    state, the references the event taught us, what the wallet moved, the support note, and
    no more syncing (nor a payout destination to keep) once the state is not one the status
    sync drives. `fx`: the FX record the wallet call left (a converted credit or debit)."""
    if d.verdict is not Verdict.APPLY or d.state is None:
        raise ValueError(f"apply() takes an applied decision, not {d.verdict}")
    settled, charged_back = p.settled_minor, p.charged_back_minor
    if d.action in (Action.DEPOSIT, Action.COMMIT):
        settled += d.amount_minor or p.amount_minor
    elif d.action is Action.CHARGEBACK:
        charged_back += d.amount_minor
    attention = p.attention
    if d.state in NEEDS_SUPPORT:
        # A new reason for support goes first; a sticky note stays behind it.
        kept = attention if attention and attention.startswith(_STICKY) else None
        attention = (d.note if kept is None else _NOTES_SEPARATOR.join((d.note, kept)))[:500]
    elif attention and not attention.startswith(_STICKY):
        attention = None
    synced = d.state in SYNCED
    return replace(
        p, state=d.state, psp_reference=p.psp_reference or e.psp_reference,
        psp_reference_alt=p.psp_reference_alt or e.psp_reference_alt, settled_minor=settled,
        charged_back_minor=charged_back, attention=attention,
        next_sync_at=p.next_sync_at if synced else None,
        payout_destination=p.payout_destination if synced else None,
        fx=p.fx if fx is None else fx)


def is_conflict(d: Decision) -> bool:
    """An ignored event that contradicts what we hold: support must look (`attention`)."""
    return d.verdict is Verdict.IGNORE and d.note.startswith("conflict")


@dataclass(frozen=True, slots=True, kw_only=True)
class PspRefund:
    """A refund the bridge owes at `psp`, which captured a payment it had left."""

    id: int
    payment_id: str
    psp: str
    psp_reference: str
    amount_minor: int
    currency: str
    state: str  # owed | refunded | failed
    attempts: int
    refund_reference: str | None = None
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"psp": self.psp, "psp_reference": self.psp_reference,
                "amount_minor": self.amount_minor, "currency": self.currency,
                "state": self.state, "attempts": self.attempts,
                "refund_reference": self.refund_reference, "last_error": self.last_error}


def refund_settled(p: Payment, psp: str, failure: str | None = None) -> Payment:
    """The payment once the refund owed at `psp` was made, by the bridge or by hand (its
    notes go: nothing is left for support; the refund stays on the payment's record), or
    given up (`refund failed at <psp>: <failure>` takes the note's place, for support to
    refund by hand). Other notes stay."""
    prefixes = (f"{_REFUND_OWED_PREFIX} at {psp}:", f"{_REFUND_FAILED_PREFIX} at {psp}:")
    kept = [part for part in (p.attention or "").split(_NOTES_SEPARATOR)
            if part and not part.startswith(prefixes)]
    if failure is not None:
        kept.insert(0, f"{_REFUND_FAILED_PREFIX} at {psp}: {failure}")
    return replace(p, attention=_NOTES_SEPARATOR.join(kept)[:500] or None)


def refund_owed(p: Payment, psp: str, what: str) -> Payment:
    """The payment after `psp`, which it left (a routing cascade), took money for it: named
    for support to refund there, kept through later events, never credited here."""
    note = f"{_REFUND_OWED_PREFIX} at {psp}: {what}"
    notes = [note, p.attention] if p.attention else [note]
    return replace(p, attention=_NOTES_SEPARATOR.join(notes)[:500])


def dead_lettered(p: Payment, inbox_id: int, note: str) -> Payment:
    """The payment after one of its events was given up on: named for support."""
    return replace(p, attention=f"{_DEAD_LETTER_PREFIX}{inbox_id} dead-lettered: {note}"[:500])
