"""Payment state machine and money conversion of the bridge: pure, table-driven."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway_bridge.payments.model import Action, PaymentFacts, State, Verdict, decide, wallet_key
from gateway_bridge.shared import money
from gateway_bridge.shared.events import EventKind, PspEvent
from gateway_bridge.shared.terms import Direction

DEP = Direction.DEPOSIT
WD = Direction.WITHDRAWAL


def ev(kind: EventKind, *, amount: int | None = 1000, currency: str | None = "USD",
       received: int | None = None, dispute: str | None = None) -> PspEvent:
    return PspEvent(psp="stripe", event_key="e", kind=kind, psp_event_type=str(kind),
                    amount_minor=amount, currency=currency, received_minor=received,
                    dispute_reference=dispute)


CASES = [
    # direction, state, event, credit_partial -> verdict, new state, action, amount
    (DEP, State.PENDING, ev(EventKind.DEPOSIT_SUCCEEDED), False,
     Verdict.APPLY, State.SUCCEEDED, Action.DEPOSIT, 1000),
    (DEP, State.CREATED, ev(EventKind.DEPOSIT_SUCCEEDED), False,
     Verdict.APPLY, State.SUCCEEDED, Action.DEPOSIT, 1000),
    (DEP, State.TIMED_OUT, ev(EventKind.DEPOSIT_SUCCEEDED), False,
     Verdict.APPLY, State.SUCCEEDED, Action.DEPOSIT, 1000),
    (DEP, State.PENDING, ev(EventKind.DEPOSIT_PENDING), False,
     Verdict.APPLY, State.PROCESSING, None, 0),
    (DEP, State.SUCCEEDED, ev(EventKind.DEPOSIT_PENDING), False,
     Verdict.IGNORE, None, None, 0),
    (DEP, State.SUCCEEDED, ev(EventKind.DEPOSIT_SUCCEEDED), False,
     Verdict.IGNORE, None, None, 0),
    (DEP, State.FAILED, ev(EventKind.DEPOSIT_SUCCEEDED), False,
     Verdict.IGNORE, None, None, 0),
    (DEP, State.PENDING, ev(EventKind.DEPOSIT_SUCCEEDED, amount=999), False,
     Verdict.APPLY, State.MISMATCH, None, 0),
    (DEP, State.PENDING, ev(EventKind.DEPOSIT_SUCCEEDED, currency="EUR"), False,
     Verdict.APPLY, State.MISMATCH, None, 0),
    (DEP, State.PENDING, ev(EventKind.DEPOSIT_SUCCEEDED, amount=None), False,
     Verdict.APPLY, State.MISMATCH, None, 0),
    (DEP, State.MISMATCH, ev(EventKind.DEPOSIT_SUCCEEDED), False,
     Verdict.IGNORE, None, None, 0),
    (DEP, State.PROCESSING, ev(EventKind.DEPOSIT_PARTIAL, received=400), False,
     Verdict.APPLY, State.PARTIALLY_PAID, None, 0),
    (DEP, State.PROCESSING, ev(EventKind.DEPOSIT_PARTIAL, received=400), True,
     Verdict.APPLY, State.PARTIALLY_PAID, Action.DEPOSIT, 400),
    (DEP, State.PROCESSING, ev(EventKind.DEPOSIT_PARTIAL, received=1000), True,
     Verdict.APPLY, State.MISMATCH, None, 0),
    (DEP, State.PENDING, ev(EventKind.DEPOSIT_FAILED), False,
     Verdict.APPLY, State.FAILED, None, 0),
    (DEP, State.PENDING, ev(EventKind.DEPOSIT_EXPIRED), False,
     Verdict.APPLY, State.EXPIRED, None, 0),
    (DEP, State.SUCCEEDED, ev(EventKind.DEPOSIT_FAILED), False,
     Verdict.IGNORE, None, None, 0),
    (DEP, State.SUCCEEDED, ev(EventKind.CHARGEBACK, amount=600, dispute="dp_1"), False,
     Verdict.APPLY, State.CHARGED_BACK, Action.CHARGEBACK, 600),
    (DEP, State.CHARGED_BACK, ev(EventKind.CHARGEBACK, amount=400, dispute="dp_2"), False,
     Verdict.APPLY, State.CHARGED_BACK, Action.CHARGEBACK, 400),
    (DEP, State.PENDING, ev(EventKind.CHARGEBACK, dispute="dp_1"), False,
     Verdict.DEFER, None, None, 0),
    (DEP, State.FAILED, ev(EventKind.CHARGEBACK, dispute="dp_1"), False,
     Verdict.IGNORE, None, None, 0),
    (DEP, State.SUCCEEDED, ev(EventKind.CHARGEBACK, dispute="dp_1", currency="EUR"), False,
     Verdict.IGNORE, None, None, 0),
    (DEP, State.PENDING, ev(EventKind.PAYOUT_PAID), False,
     Verdict.IGNORE, None, None, 0),
    (DEP, State.PENDING, ev(EventKind.IGNORED), False,
     Verdict.IGNORE, None, None, 0),
    (WD, State.REQUESTED, ev(EventKind.PAYOUT_PAID), False,
     Verdict.DEFER, None, None, 0),
    (WD, State.RESERVED, ev(EventKind.PAYOUT_PENDING), False,
     Verdict.APPLY, State.PAYOUT_PENDING, None, 0),
    (WD, State.PAYOUT_PENDING, ev(EventKind.PAYOUT_PAID), False,
     Verdict.APPLY, State.PAID, Action.COMMIT, 0),
    (WD, State.RESERVED, ev(EventKind.PAYOUT_PAID, amount=None, currency=None), False,
     Verdict.APPLY, State.PAID, Action.COMMIT, 0),
    (WD, State.PAYOUT_PENDING, ev(EventKind.PAYOUT_PAID, amount=5), False,
     Verdict.IGNORE, None, None, 0),
    (WD, State.PAYOUT_PENDING, ev(EventKind.PAYOUT_FAILED), False,
     Verdict.APPLY, State.PAYOUT_FAILED, Action.CANCEL, 0),
    (WD, State.TIMED_OUT, ev(EventKind.PAYOUT_FAILED), False,
     Verdict.APPLY, State.PAYOUT_FAILED, Action.CANCEL, 0),
    (WD, State.PAID, ev(EventKind.PAYOUT_FAILED), False,
     Verdict.APPLY, State.REVERSED, Action.REVERSE, 0),
    (WD, State.PAID, ev(EventKind.PAYOUT_REVERSED), False,
     Verdict.APPLY, State.REVERSED, Action.REVERSE, 0),
    (WD, State.PAYOUT_PENDING, ev(EventKind.PAYOUT_REVERSED), False,
     Verdict.DEFER, None, None, 0),
    (WD, State.REVERSED, ev(EventKind.PAYOUT_FAILED), False,
     Verdict.IGNORE, None, None, 0),
    (WD, State.PAYOUT_FAILED, ev(EventKind.PAYOUT_PAID), False,
     Verdict.IGNORE, None, None, 0),
    (WD, State.PAID, ev(EventKind.PAYOUT_PENDING), False,
     Verdict.IGNORE, None, None, 0),
    (WD, State.REJECTED, ev(EventKind.PAYOUT_PAID), False,
     Verdict.IGNORE, None, None, 0),
    (WD, State.PAID, ev(EventKind.DEPOSIT_SUCCEEDED), False,
     Verdict.IGNORE, None, None, 0),
]


@pytest.mark.parametrize(("direction", "state", "event", "partial", "verdict", "new_state",
                          "action", "amount"), CASES)
def test_decide(direction: Direction, state: State, event: PspEvent, partial: bool,
                verdict: Verdict, new_state: State | None, action: Action | None,
                amount: int) -> None:
    """Each (payment state, event) pair gives the documented verdict, state and wallet call."""
    d = decide(facts(direction, state), event, credit_partial=partial)
    assert (d.verdict, d.state, d.action, d.amount_minor) == (verdict, new_state, action,
                                                               amount), d.note


def facts(direction: Direction, state: State, *, settled: int | None = None,
          charged_back: int | None = None) -> PaymentFacts:
    """A 10.00 USD payment; money moved as its state implies unless given."""
    credited = {State.SUCCEEDED, State.CHARGED_BACK, State.PAID, State.REVERSED}
    if settled is None:
        settled = 1000 if state in credited else 0
    if charged_back is None:
        charged_back = 600 if state is State.CHARGED_BACK else 0
    return PaymentFacts(direction, state, 1000, "USD", settled, charged_back)


@pytest.mark.parametrize(("settled", "charged_back", "asked", "verdict", "amount"), [
    (1000, 0, 1500, Verdict.APPLY, 1000),   # capped at what was credited
    (400, 0, None, Verdict.APPLY, 400),     # no amount: what is left
    (1000, 1000, 100, Verdict.IGNORE, 0),   # nothing left to take
    (0, 0, 100, Verdict.IGNORE, 0),         # partial payment held, never credited
])
def test_chargebacks_never_take_more_than_was_credited(
        settled: int, charged_back: int, asked: int | None, verdict: Verdict,
        amount: int) -> None:
    """A dispute debits at most the credited amount not yet charged back."""
    state = State.PARTIALLY_PAID if settled < 1000 else State.SUCCEEDED
    d = decide(facts(DEP, state, settled=settled, charged_back=charged_back),
               ev(EventKind.CHARGEBACK, amount=asked, dispute="dp_9"), credit_partial=False)
    assert (d.verdict, d.amount_minor) == (verdict, amount), d.note


@pytest.mark.parametrize(("state", "kind"), [
    (State.FAILED, EventKind.DEPOSIT_SUCCEEDED),
    (State.EXPIRED, EventKind.DEPOSIT_SUCCEEDED),
    (State.SUCCEEDED, EventKind.DEPOSIT_FAILED),
])
def test_final_answers_contradicting_ours_are_flagged_not_applied(state: State,
                                                                  kind: EventKind) -> None:
    """Captured after we closed it, or refunded after we credited it: a conflict for support."""
    d = decide(facts(DEP, state), ev(kind), credit_partial=False)
    assert d.verdict is Verdict.IGNORE and d.note.startswith("conflict"), d.note


def test_conflicting_paid_after_failure_is_flagged() -> None:
    """A payout reported paid after we released the funds is ignored but named a conflict."""
    d = decide(facts(WD, State.PAYOUT_FAILED), ev(EventKind.PAYOUT_PAID), credit_partial=False)
    assert d.verdict is Verdict.IGNORE and d.note.startswith("conflict")


def test_terminal_states_only_leave_by_the_documented_exceptions() -> None:
    """Apart from chargeback after success and reversal after paid, terminal states stay."""
    terminal = {State.SUCCEEDED, State.FAILED, State.EXPIRED, State.MISMATCH,
                State.PARTIALLY_PAID, State.CHARGED_BACK, State.REJECTED, State.PAID,
                State.PAYOUT_FAILED, State.REVERSED}
    allowed = {(State.SUCCEEDED, State.CHARGED_BACK), (State.PARTIALLY_PAID, State.CHARGED_BACK),
               (State.CHARGED_BACK, State.CHARGED_BACK), (State.PAID, State.REVERSED)}
    for direction in Direction:
        for state in terminal:
            for kind in EventKind:
                e = ev(kind, dispute="dp", received=10)
                for partial in (False, True):
                    d = decide(facts(direction, state), e, credit_partial=partial)
                    if d.verdict is Verdict.APPLY:
                        assert (state, d.state) in allowed, (direction, state, kind, d)


def test_wallet_keys_are_derived_from_the_payment() -> None:
    """The same action on the same payment always has the same wallet key."""
    assert wallet_key(Action.DEPOSIT, "pay_1") == "bridge:deposit:pay_1"
    assert wallet_key(Action.DEPOSIT, "pay_1") != wallet_key(Action.COMMIT, "pay_1")
    assert wallet_key(Action.CHARGEBACK, "pay_1", "dp_1") != wallet_key(
        Action.CHARGEBACK, "pay_1", "dp_2")


@pytest.mark.parametrize(("value", "currency", "minor"), [
    ("10.50", "USD", 1050), (Decimal("0.00012345"), "BTC", 12345), ("1000", "JPY", 1000),
    ("1.234", "KWD", 1234), ("0", "USD", 0), (7, "EUR", 700),
])
def test_to_minor_exact(value: str | Decimal | int, currency: str, minor: int) -> None:
    """Decimal amounts convert exactly to minor units."""
    assert money.to_minor(value, currency) == minor
    assert money.to_minor(money.format_major(minor, currency), currency) == minor


@pytest.mark.parametrize(("value", "currency"), [
    ("10.505", "USD"), ("1.5", "JPY"), ("abc", "USD"), ("NaN", "USD"), ("Infinity", "EUR"),
    ("1", "XXX"), ("1e30", "USD"),
])
def test_to_minor_refuses_what_would_round(value: str, currency: str) -> None:
    """Too many decimals, non-numbers, unknown currencies and huge values are errors."""
    with pytest.raises(money.AmountError):
        money.to_minor(value, currency)
