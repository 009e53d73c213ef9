"""AML's pure rules: what each rule sees, which hits hold, and the cases' lifecycle."""

from __future__ import annotations

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
        "deposits_in_cumulative_window_minor": 100, "deposits_in_structuring_window": [100],
        "instruments_in_window": 1, "currencies_in_window": 1} | changes
    return AmlFacts(**values)  # type: ignore[arg-type]


def rules_hit(f: AmlFacts) -> dict[str, bool]:
    return {h.rule: h.holds for h in evaluate(POLICY, f)}


def test_each_rule_at_its_threshold() -> None:
    assert rules_hit(facts()) == {}
    assert rules_hit(facts(amount_minor=10_000)) == {"AML_LARGE_DEPOSIT": False}
    assert rules_hit(facts(amount_minor=9_999)) == {}
    assert rules_hit(facts(deposits_in_cumulative_window_minor=50_000)) == {
        "AML_CUMULATIVE_DEPOSITS": True}
    # Three deposits within 10 % under the large-deposit threshold: structuring.
    assert rules_hit(facts(deposits_in_structuring_window=[9_000, 9_500, 9_999])) == {
        "AML_STRUCTURING": True}
    assert rules_hit(facts(deposits_in_structuring_window=[8_999, 9_500, 9_999])) == {}
    assert rules_hit(facts(instruments_in_window=6)) == {"AML_MANY_INSTRUMENTS": False}
    assert rules_hit(facts(currencies_in_window=4)) == {"AML_CURRENCY_HOPPING": True}
    # A currency without a threshold is not watched by the amount rules.
    assert rules_hit(facts(currency="JPY", amount_minor=10**9,
                           deposits_in_cumulative_window_minor=10**9)) == {}
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
