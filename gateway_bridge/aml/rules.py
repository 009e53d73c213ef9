"""Anti-money-laundering monitoring (docs/COMPLIANCE.md): the rules over a player's recent
payments, and the lifecycle of the cases their hits open. Pure, with no I/O.

A hit opens a case (one open case per player and rule: a later hit adds its payment to it).
A case is worked by an analyst: open → investigating → cleared | reported. While a case of a
rule that holds is open, the player's withdrawals wait (they are reserved, not paid out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from gateway_bridge.shared.terms import Direction


class CaseState(StrEnum):
    OPEN = "open"
    INVESTIGATING = "investigating"
    CLEARED = "cleared"
    REPORTED = "reported"


OPEN_STATES = frozenset({CaseState.OPEN, CaseState.INVESTIGATING})
_NEXT: Mapping[CaseState, frozenset[CaseState]] = {
    CaseState.OPEN: frozenset({CaseState.INVESTIGATING, CaseState.CLEARED,
                               CaseState.REPORTED}),
    CaseState.INVESTIGATING: frozenset({CaseState.CLEARED, CaseState.REPORTED}),
    CaseState.CLEARED: frozenset(),
    CaseState.REPORTED: frozenset(),
}


class CaseRefused(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def transition(state: CaseState, to: CaseState) -> None:
    """CaseRefused unless the lifecycle allows `state` → `to`."""
    if to not in _NEXT[state]:
        raise CaseRefused("AML_CASE_STATE", f"a case that is {state.value} can't become "
                                            f"{to.value}")


@dataclass(frozen=True, slots=True)
class AmlPolicy:
    """Thresholds in minor units per currency (a currency without one is not watched by
    that rule). Defaults follow the usual regulated-casino starting points."""

    large_deposit_minor: Mapping[str, int] = field(default_factory=lambda: {
        "EUR": 1_000_000, "USD": 1_000_000, "GBP": 1_000_000})
    cumulative_minor: Mapping[str, int] = field(default_factory=lambda: {
        "EUR": 5_000_000, "USD": 5_000_000, "GBP": 5_000_000})
    cumulative_window_s: int = 30 * 86_400
    # Structuring: several deposits each just under the large-deposit threshold.
    structuring_band_percent: int = 10
    structuring_count_min: int = 3
    structuring_window_s: int = 7 * 86_400
    instruments_max: int = 5
    instruments_window_s: int = 30 * 86_400
    # Money in and out in several currencies in a short time.
    currencies_max: int = 3
    currencies_window_s: int = 86_400
    # The rules whose hits hold the player's withdrawals while their case is open.
    holding_rules: frozenset[str] = frozenset({"AML_STRUCTURING", "AML_CUMULATIVE_DEPOSITS",
                                               "AML_CURRENCY_HOPPING"})


@dataclass(frozen=True, slots=True, kw_only=True)
class AmlFacts:
    """A payment and the player's recent history (this payment included)."""

    direction: Direction
    currency: str
    amount_minor: int
    deposits_in_cumulative_window_minor: int  # in `currency`
    deposits_in_structuring_window: Sequence[int]  # amounts, in `currency`
    instruments_in_window: int
    currencies_in_window: int


@dataclass(frozen=True, slots=True)
class Hit:
    rule: str
    holds: bool
    detail: str


def evaluate(policy: AmlPolicy, f: AmlFacts) -> list[Hit]:
    hits: list[tuple[str, str]] = []
    large = policy.large_deposit_minor.get(f.currency)
    if f.direction is Direction.DEPOSIT:
        if large is not None and f.amount_minor >= large:
            hits.append(("AML_LARGE_DEPOSIT", f"a single deposit of {f.amount_minor} "
                                              f"{f.currency} (threshold {large})"))
        cumulative = policy.cumulative_minor.get(f.currency)
        if cumulative is not None and f.deposits_in_cumulative_window_minor >= cumulative:
            hits.append(("AML_CUMULATIVE_DEPOSITS",
                         f"{f.deposits_in_cumulative_window_minor} {f.currency} deposited in "
                         f"{policy.cumulative_window_s // 86_400} days (threshold "
                         f"{cumulative})"))
        if large is not None:
            floor = large * (100 - policy.structuring_band_percent) // 100
            near = [a for a in f.deposits_in_structuring_window if floor <= a < large]
            if len(near) >= policy.structuring_count_min:
                hits.append(("AML_STRUCTURING",
                             f"{len(near)} deposits just under {large} {f.currency} in "
                             f"{policy.structuring_window_s // 86_400} days"))
    if f.instruments_in_window > policy.instruments_max:
        hits.append(("AML_MANY_INSTRUMENTS", f"{f.instruments_in_window} payment instruments "
                                             f"in {policy.instruments_window_s // 86_400} "
                                             "days"))
    if f.currencies_in_window > policy.currencies_max:
        hits.append(("AML_CURRENCY_HOPPING", f"money in and out in {f.currencies_in_window} "
                                             f"currencies in "
                                             f"{policy.currencies_window_s // 3600} hours"))
    return [Hit(rule, rule in policy.holding_rules, detail) for rule, detail in hits]
