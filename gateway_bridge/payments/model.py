r"""Payment states and the one function that decides what a PSP event does to a payment.

A deposit:    created -> pending -> processing -> succeeded -> charged_back
                                              \-> failed | expired | mismatch | partially_paid
A withdrawal: requested -> reserved -> payout_pending -> paid -> reversed
                       \-> rejected          \-> payout_failed

Terminal states are never left, with two exceptions the money demands: a succeeded deposit
can still be charged back, and a paid payout can still come back (Stripe documents payouts
that show `paid` and later turn `failed`, DESIGN.md §7). `timed_out` is where support finds
a payment nobody answered for; it is not terminal, because a late answer is still the truth.

Events that arrive too early to apply (a reversal before the payout is reported paid, a
chargeback before the capture) are deferred and retried, so reordered delivery ends in the
same state as ordered delivery. Events that arrive too late are recorded and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway_bridge.shared.events import EventKind, PspEvent


class Direction(StrEnum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"


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


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    note: str
    state: State | None = None
    action: Action | None = None
    amount_minor: int = 0

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
        return _apply(State.FAILED, f"the PSP reports {e.psp_event_type}")
    return _apply(State.EXPIRED, "the payer did not pay in time")


def _late_deposit_event(p: PaymentFacts, e: PspEvent) -> Decision:
    """A final answer that contradicts the final state we hold is never applied blindly:
    money captured after we closed the deposit, or refunded after we credited it, is named a
    conflict so support sees it (the payment's `attention`)."""
    k, s = e.kind, p.state
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
