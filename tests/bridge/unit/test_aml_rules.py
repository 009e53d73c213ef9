"""AML's pure rules: what each rule sees, which hits hold, and the cases' lifecycle."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway_bridge.aml.rules import (
    AmlFacts,
    AmlPolicy,
    CaseRefused,
    CaseState,
    evaluate,
    transition,
)
from gateway_bridge.shared.terms import Direction

POLICY = AmlPolicy(large_deposit_minor={"EUR": 10_000}, cumulative_minor={"EUR": 50_000})


def facts(**changes: object) -> AmlFacts:
    values: dict[str, object] = {
        "direction": Direction.DEPOSIT, "currency": "EUR", "amount_minor": 100,
        "deposits_before_minor": 100, "deposits_in_structuring_window": [("pay_0", 100)],
        "instruments_in_window": 1, "currencies_in_window": 1, "payment_id": "pay_9"} | changes
    return AmlFacts(**values)  # type: ignore[arg-type]


def rules_hit(f: AmlFacts) -> dict[str, bool]:
    return {h.rule: h.holds for h in evaluate(POLICY, f)}


def test_each_rule_at_its_threshold() -> None:
    assert rules_hit(facts()) == {}
    assert rules_hit(facts(amount_minor=10_000)) == {"AML_LARGE_DEPOSIT": False}
    assert rules_hit(facts(amount_minor=9_999)) == {}
    # The deposit that crosses the cumulative threshold fires; later ones don't reopen it.
    assert rules_hit(facts(deposits_before_minor=49_900)) == {"AML_CUMULATIVE_DEPOSITS": True}
    assert rules_hit(facts(deposits_before_minor=50_000)) == {}
    # A third deposit within 10 % under the large-deposit threshold: structuring, with every
    # deposit of the pattern on the case.
    two = [("pay_1", 9_000), ("pay_2", 9_500), ("pay_3", 5_000)]
    [hit] = evaluate(POLICY, facts(amount_minor=9_999, deposits_in_structuring_window=two))
    assert (hit.rule, hit.holds, hit.payment_ids) == ("AML_STRUCTURING", True,
                                                      ("pay_1", "pay_2", "pay_9"))
    assert rules_hit(facts(amount_minor=8_999, deposits_in_structuring_window=two)) == {}
    assert rules_hit(facts(amount_minor=9_999,
                           deposits_in_structuring_window=[("pay_1", 9_000)])) == {}
    assert rules_hit(facts(instruments_in_window=6)) == {"AML_MANY_INSTRUMENTS": False}
    assert rules_hit(facts(currencies_in_window=4)) == {"AML_CURRENCY_HOPPING": True}
    # A currency without a threshold is not watched by the amount rules.
    assert rules_hit(facts(currency="JPY", amount_minor=10**9,
                           deposits_before_minor=10**9)) == {}
    # Withdrawals meet only the rules about instruments and currencies.
    assert rules_hit(facts(direction=Direction.WITHDRAWAL, amount_minor=10**6)) == {}


def test_a_case_moves_forward_only() -> None:
    transition(CaseState.OPEN, CaseState.INVESTIGATING)
    transition(CaseState.INVESTIGATING, CaseState.REPORTED)
    transition(CaseState.OPEN, CaseState.CLEARED)
    for done in (CaseState.CLEARED, CaseState.REPORTED):
        with pytest.raises(CaseRefused):
            transition(done, CaseState.OPEN)
    with pytest.raises(CaseRefused):
        transition(CaseState.INVESTIGATING, CaseState.OPEN)


def test_little_play_fires_on_a_withdrawal_below_the_share_played() -> None:
    policy = AmlPolicy()
    facts = AmlFacts(direction=Direction.WITHDRAWAL, currency="USD", amount_minor=50_00,
                     deposits_before_minor=0, deposits_in_structuring_window=(),
                     instruments_in_window=1, currencies_in_window=1, payment_id="w1",
                     deposited_in_play_window_minor=100_00,
                     wagered_in_play_window_minor=29_99)
    [hit] = evaluate(policy, facts)
    assert (hit.rule, hit.holds, hit.payment_ids) == ("AML_LITTLE_PLAY", False, ("w1",))
    assert evaluate(policy, replace(facts, wagered_in_play_window_minor=30_00)) == []
    assert evaluate(policy, replace(facts, deposited_in_play_window_minor=0)) == []
    assert evaluate(replace(policy, little_play_percent=0), facts) == []
    assert evaluate(policy, replace(facts, direction=Direction.DEPOSIT)) == []
