"""The typed payment: the bookkeeping after a decision (`apply`), and the JSON shapes its
parts are stored in, which must read back as they were written and match what rows stored
before the types existed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway_bridge.payments.model import (
    Action,
    CashierRequest,
    Decision,
    FxCredit,
    FxQuote,
    Payment,
    PaymentFx,
    Refusal,
    State,
    Verdict,
    apply,
    dead_lettered,
    decide,
    is_conflict,
)
from gateway_bridge.shared.events import EventKind, PspEvent
from gateway_bridge.shared.terms import Direction

AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def payment(direction: Direction = Direction.DEPOSIT, state: State = State.PENDING,
            **changes: object) -> Payment:
    p = Payment(
        id="pay_1", direction=direction, state=state, psp="stripe", method="card",
        player_id="p1", currency="USD", amount_minor=1000, settled_minor=0,
        charged_back_minor=0, psp_reference="pi_1", psp_reference_alt=None,
        withdrawal_id="w1" if direction is Direction.WITHDRAWAL else None, client="shop",
        client_key="k1",
        request=CashierRequest(direction=direction, player_id="p1", amount_minor=1000,
                               currency="USD", psp="stripe", method="card"),
        payout_destination="acct_9" if direction is Direction.WITHDRAWAL else None,
        instructions=None, refusal=None, attention=None, sync_attempts=2,
        next_sync_at=AT + timedelta(seconds=30), created_at=AT, updated_at=AT)
    return replace(p, **changes)  # type: ignore[arg-type]


def event(kind: EventKind, **fields: object) -> PspEvent:
    values: dict[str, object] = {"amount_minor": 1000, "currency": "USD"} | fields
    return PspEvent(psp="stripe", event_key="e1", kind=kind, psp_event_type=str(kind),
                    **values)  # type: ignore[arg-type]


def decided(p: Payment, e: PspEvent, *, credit_partial: bool = False) -> Payment:
    d = decide(p.facts(), e, credit_partial=credit_partial)
    assert d.verdict is Verdict.APPLY, d
    return apply(p, d, e)


def test_a_captured_deposit_is_settled_and_no_longer_synced() -> None:
    p = payment(attention="timed out after 5 status checks")
    after = decided(p, event(EventKind.DEPOSIT_SUCCEEDED, psp_reference_alt="ch_1"))
    assert after.state is State.SUCCEEDED
    assert after.settled_minor == 1000 and after.charged_back_minor == 0
    assert after.next_sync_at is None
    assert after.attention is None, "a timeout note is answered by the PSP's final word"
    assert after.psp_reference == "pi_1" and after.psp_reference_alt == "ch_1"
    assert p.state is State.PENDING and p.settled_minor == 0, "the input is left as it was"


def test_a_partial_credit_settles_what_arrived_and_asks_for_support() -> None:
    after = decided(payment(), event(EventKind.DEPOSIT_PARTIAL, received_minor=400),
                    credit_partial=True)
    assert (after.state, after.settled_minor) == (State.PARTIALLY_PAID, 400)
    assert after.attention is not None and "400 of 1000" in after.attention


def test_a_chargeback_counts_what_it_took_and_keeps_the_settled_amount() -> None:
    p = payment(state=State.SUCCEEDED, settled_minor=1000, next_sync_at=None)
    after = decided(p, event(EventKind.CHARGEBACK, amount_minor=300, dispute_reference="dp_1"))
    assert (after.state, after.settled_minor, after.charged_back_minor) == (
        State.CHARGED_BACK, 1000, 300)


def test_a_commit_settles_the_whole_payout_and_forgets_the_destination() -> None:
    p = payment(Direction.WITHDRAWAL, State.PAYOUT_PENDING)
    after = decided(p, event(EventKind.PAYOUT_PAID))
    assert (after.state, after.settled_minor) == (State.PAID, 1000)
    assert after.payout_destination is None and after.next_sync_at is None


def test_a_payout_accepted_stays_scheduled_and_keeps_its_destination() -> None:
    p = payment(Direction.WITHDRAWAL, State.RESERVED)
    after = decided(p, event(EventKind.PAYOUT_PENDING))
    assert after.state is State.PAYOUT_PENDING
    assert after.next_sync_at == p.next_sync_at and after.payout_destination == "acct_9"


def test_a_dead_letter_note_outlives_the_next_applied_event() -> None:
    p = dead_lettered(payment(), 7, "wallet refused deposit: X")
    assert p.attention == "event 7 dead-lettered: wallet refused deposit: X"
    assert decided(p, event(EventKind.DEPOSIT_PENDING)).attention == p.attention


def test_the_fx_record_of_the_wallet_call_replaces_the_old_one() -> None:
    quote = FxQuote(rate="60000", pair="BTC/USD", source="sim", as_of=AT, spread_bps=150,
                    estimated_credit_minor=88, quoted_at=AT)
    p = payment(fx=PaymentFx(quote=quote))
    credit = FxCredit(rate="60000", pair="BTC/USD", source="sim", as_of=AT, spread_bps=150,
                      paid_minor=150000, credited_minor=88)
    e = event(EventKind.DEPOSIT_SUCCEEDED)
    d = decide(p.facts(), e, credit_partial=False)
    after = apply(p, d, e, fx=PaymentFx(quote=quote, credit=credit))
    assert after.fx == PaymentFx(quote=quote, credit=credit)
    assert p.fx == PaymentFx(quote=quote), "the input is left as it was"
    assert apply(p, d, e).fx == p.fx, "no wallet FX record: the payment's stays"


def test_apply_refuses_a_decision_that_does_not_apply() -> None:
    with pytest.raises(ValueError, match="applied decision"):
        apply(payment(), Decision.ignore("late"), event(EventKind.DEPOSIT_PENDING))


def test_only_a_conflict_note_is_a_conflict() -> None:
    assert is_conflict(Decision.ignore("conflict: paid after payout_failed"))
    assert not is_conflict(Decision.ignore("late deposit_pending"))
    assert not is_conflict(Decision(Verdict.APPLY, "conflict", State.FAILED, Action.CANCEL))


# --- stored shapes -------------------------------------------------------------------------


def test_a_deposit_request_is_stored_as_its_fingerprint_was() -> None:
    r = CashierRequest(direction=Direction.DEPOSIT, player_id="p1", amount_minor=1000,
                       currency="USD", psp="nowpayments", method="crypto", pay_currency="btc",
                       country="DE")
    # The shape rows had before the type: pay_currency and return_url always, optional risk
    # fields only when sent.
    assert r.to_json() == {"player_id": "p1", "amount_minor": 1000, "currency": "USD",
                           "psp": "nowpayments", "method": "crypto", "pay_currency": "btc",
                           "return_url": "", "country": "DE"}
    assert CashierRequest.from_json(Direction.DEPOSIT, r.to_json()) == r


def test_a_withdrawal_request_keeps_only_the_destination_digest() -> None:
    digest = CashierRequest.destination_digest("DE89 3704 0044 0532 0130 00")
    r = CashierRequest(direction=Direction.WITHDRAWAL, player_id="p1", amount_minor=500,
                       currency="EUR", psp="adyen", method="bank", destination_sha256=digest)
    stored = r.to_json()
    assert stored["destination"] == digest and len(digest) == 64
    assert "DE89" not in str(stored)
    assert CashierRequest.from_json(Direction.WITHDRAWAL, stored) == r


def test_a_request_stored_before_the_risk_fields_matches_its_retry() -> None:
    old_row = {"player_id": "p1", "amount_minor": 1000, "currency": "USD", "psp": "stripe",
               "method": "card", "pay_currency": "", "return_url": ""}
    retry = CashierRequest(direction=Direction.DEPOSIT, player_id="p1", amount_minor=1000,
                           currency="USD", psp="stripe", method="card")
    assert CashierRequest.from_json(Direction.DEPOSIT, old_row) == retry
    assert CashierRequest.from_json(Direction.DEPOSIT, old_row) != replace(retry,
                                                                           amount_minor=999)


def test_refusal_and_fx_read_back_as_written() -> None:
    refusal = Refusal(reason="RISK_DENIED", message="refused", rules=("velocity", "country"))
    assert refusal.to_json()["rules"] == ["velocity", "country"]
    assert Refusal.from_json(refusal.to_json()) == refusal
    assert "rules" not in Refusal(reason="X", message="y").to_json()
    fx = PaymentFx(
        quote=FxQuote(rate="0.9", pair="USD/EUR", source="s", as_of=AT, spread_bps=0,
                      estimated_credit_minor=90, quoted_at=AT + timedelta(seconds=1)),
        credit=FxCredit(rate="0.91", pair="USD/EUR", source="s", as_of=AT, spread_bps=0,
                        paid_minor=100, credited_minor=91),
        charged_back_wallet_minor=45)
    assert PaymentFx.from_json(fx.to_json()) == fx
    assert PaymentFx().to_json() == {}
    # A chargeback worth less than a minor unit took nothing, and says so.
    assert PaymentFx(charged_back_wallet_minor=0).to_json() == {"charged_back_wallet_minor": 0}
    assert PaymentFx.from_json({"charged_back_wallet_minor": 0}).charged_back_wallet_minor == 0


def test_the_error_tree_in_the_docstring_is_the_class_tree() -> None:
    """shared/errors.py draws its classes as a tree; each drawn parent is the real one."""
    import inspect
    import re

    from gateway_bridge.shared import errors

    drawn: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        m = re.match(r"^(\s*(?:[│ ]\s*)*)(?:[├└]── )?([A-Z]\w+)\s{2,}", line)
        if not m or not hasattr(errors, m.group(2)):
            continue
        depth = m.start(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            drawn[m.group(2)] = stack[-1][1]
        stack.append((depth, m.group(2)))
    assert len(drawn) >= 8, drawn
    for name, parent in drawn.items():
        cls = getattr(errors, name)
        assert inspect.isclass(cls) and cls.__bases__[0].__name__ == parent, (name, parent)
