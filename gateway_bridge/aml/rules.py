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


RULES = frozenset({"AML_LARGE_DEPOSIT", "AML_CUMULATIVE_DEPOSITS", "AML_STRUCTURING",
                   "AML_MANY_INSTRUMENTS", "AML_CURRENCY_HOPPING", "AML_LITTLE_PLAY"})
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
    # Little play: a withdrawal when the player's bets in the window came to less than this
    # share of their deposits in it (money passed through the casino, not played); 0: off.
    little_play_percent: int = 30
    little_play_window_s: int = 30 * 86_400
    # The rules whose hits hold the player's withdrawals while their case is open.
    holding_rules: frozenset[str] = frozenset({"AML_STRUCTURING", "AML_CUMULATIVE_DEPOSITS",
                                               "AML_CURRENCY_HOPPING"})


@dataclass(frozen=True, slots=True, kw_only=True)
class AmlFacts:
    """A payment and the player's recent history (this payment included)."""

    direction: Direction
    currency: str
    amount_minor: int
    # The player's other deposits in `currency`: the sum in the cumulative window, and
    # (id, amount) of each in the structuring window, oldest first.
    deposits_before_minor: int
    deposits_in_structuring_window: Sequence[tuple[str, int]]
    instruments_in_window: int
    currencies_in_window: int
    payment_id: str = ""
    # A withdrawal's: what the player's wallet in `currency` took in deposits and staked in
    # bets (net of rollbacks) in the little-play window.
    deposited_in_play_window_minor: int = 0
    wagered_in_play_window_minor: int = 0


# The payments a case lists, at most (a case is about a pattern, not a ledger).
CASE_PAYMENTS_MAX = 100


@dataclass(frozen=True, slots=True)
class Hit:
    rule: str
    holds: bool
    detail: str
    payment_ids: tuple[str, ...] = ()  # the payments that make the pattern


def evaluate(policy: AmlPolicy, f: AmlFacts) -> list[Hit]:
    """The hits of this payment: a rule fires on the payment that makes its pattern (the
    deposit that crosses the cumulative threshold, a near-threshold deposit that completes
    the structuring count), so old history alone never reopens a cleared case."""
    hits: list[tuple[str, str, tuple[str, ...]]] = []
    own = (f.payment_id,) if f.payment_id else ()
    large = policy.large_deposit_minor.get(f.currency)
    if f.direction is Direction.DEPOSIT:
        if large is not None and f.amount_minor >= large:
            hits.append(("AML_LARGE_DEPOSIT", f"a single deposit of {f.amount_minor} "
                                              f"{f.currency} (threshold {large})", own))
        cumulative = policy.cumulative_minor.get(f.currency)
        total = f.deposits_before_minor + f.amount_minor
        if cumulative is not None and f.deposits_before_minor < cumulative <= total:
            hits.append(("AML_CUMULATIVE_DEPOSITS",
                         f"{total} {f.currency} deposited in "
                         f"{policy.cumulative_window_s // 86_400} days (threshold "
                         f"{cumulative})", own))
        if large is not None:
            floor = large * (100 - policy.structuring_band_percent) // 100
            if floor <= f.amount_minor < large:
                near = [i for i, a in f.deposits_in_structuring_window if floor <= a < large]
                if len(near) + 1 >= policy.structuring_count_min:
                    hits.append(("AML_STRUCTURING",
                                 f"{len(near) + 1} deposits just under {large} {f.currency} "
                                 f"in {policy.structuring_window_s // 86_400} days",
                                 (*near, *own)[-CASE_PAYMENTS_MAX:]))
    if f.direction is Direction.WITHDRAWAL and policy.little_play_percent \
            and f.deposited_in_play_window_minor > 0 \
            and f.wagered_in_play_window_minor * 100 \
            < f.deposited_in_play_window_minor * policy.little_play_percent:
        hits.append(("AML_LITTLE_PLAY",
                     f"a withdrawal of {f.amount_minor} {f.currency} after bets of "
                     f"{f.wagered_in_play_window_minor} against deposits of "
                     f"{f.deposited_in_play_window_minor} in "
                     f"{policy.little_play_window_s // 86_400} days (less than "
                     f"{policy.little_play_percent} %)", own))
    if f.instruments_in_window > policy.instruments_max:
        hits.append(("AML_MANY_INSTRUMENTS", f"{f.instruments_in_window} payment instruments "
                                             f"in {policy.instruments_window_s // 86_400} "
                                             "days", own))
    if f.currencies_in_window > policy.currencies_max:
        hits.append(("AML_CURRENCY_HOPPING", f"payments in {f.currencies_in_window} "
                                             f"currencies in "
                                             f"{policy.currencies_window_s // 3600} hours",
                     own))
    return [Hit(rule, rule in policy.holding_rules, detail, ids)
            for rule, detail, ids in hits]
