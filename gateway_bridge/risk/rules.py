"""Fraud and risk rules: the facts about one cashier request in, one result per rule out.

Pure: no I/O. The use case (gateway_bridge.risk) gathers the facts (earlier attempts from
bridge.risk_decisions, deposits and bets from the wallet's journal, an optional external
score) and stores every result with the decision, so support and metrics see why.

Every rule answers allow / review / deny with a stable `code` and a human message. The
decision is the strictest answer; a threshold of 0 switches its step off. Velocity counts
attempts (the request being decided included), denied ones too: an attacker who was stopped
stays stopped for the rest of the window instead of probing again at once.

    rule code                     fires when
    VELOCITY_PLAYER_COUNT         the player's attempts in the window exceed the limit
    VELOCITY_PLAYER_AMOUNT        their sum (this currency) exceeds the currency's limit
    VELOCITY_INSTRUMENT_COUNT     the same, per payment instrument
    VELOCITY_INSTRUMENT_AMOUNT
    AMOUNT_THRESHOLD              one payment exceeds the currency's limit
    INSTRUMENT_SHARED             more players than allowed used the same instrument
    WITHDRAWAL_WITHOUT_WAGERING   a withdrawal after deposits that were not wagered enough
    COUNTRY_CURRENCY_MISMATCH     the request's country does not use this currency
    SCORE                         the external score is above a threshold
    SCORING_UNAVAILABLE           the external scorer failed: the fail-safe answer applies
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gateway_bridge.shared.errors import Refused
from gateway_bridge.shared.terms import Direction

# Scores the external API may answer with (inclusive).
SCORE_MIN = 0
SCORE_MAX = 100


class Outcome(StrEnum):
    ALLOW = "allow"
    REVIEW = "review"
    DENY = "deny"


_SEVERITY = {Outcome.ALLOW: 0, Outcome.REVIEW: 1, Outcome.DENY: 2}


@dataclass(frozen=True, slots=True)
class Threshold:
    """Review above `review_above`, deny above `deny_above`; 0 switches a step off."""

    review_above: int = 0
    deny_above: int = 0

    def outcome(self, value: float) -> Outcome:
        if self.deny_above and value > self.deny_above:
            return Outcome.DENY
        if self.review_above and value > self.review_above:
            return Outcome.REVIEW
        return Outcome.ALLOW

    def limit(self, outcome: Outcome) -> int:
        return self.deny_above if outcome is Outcome.DENY else self.review_above


@dataclass(frozen=True, slots=True)
class RiskPolicy:
    """The configured rules. The defaults keep traffic that was accepted before accepted:
    only velocity limits far above a person's pace and the shared-instrument review are on."""

    enabled: bool = True
    window_s: int = 3600
    player_count: Threshold = Threshold(review_above=100, deny_above=500)
    # currency -> limits on the sum of attempts in the window (minor units)
    player_amount_minor: Mapping[str, Threshold] = field(default_factory=dict)
    instrument_count: Threshold = Threshold(review_above=100, deny_above=500)
    instrument_amount_minor: Mapping[str, Threshold] = field(default_factory=dict)
    # currency -> limits on one payment (minor units)
    amount_minor: Mapping[str, Threshold] = field(default_factory=dict)
    # Other players seen on the same instrument within instrument_players_window_s.
    instrument_players: Threshold = Threshold(review_above=2, deny_above=0)
    instrument_players_window_s: int = 30 * 86_400
    # A withdrawal needs bets of at least this % of the deposits in the wagering window.
    wagering_percent_min: int = 0
    wagering_window_s: int = 30 * 86_400
    wagering_outcome: Outcome = Outcome.REVIEW
    # country (ISO 3166 alpha-2) -> currencies its players pay in; unlisted: not checked
    country_currencies: Mapping[str, frozenset[str]] = field(default_factory=dict)
    country_outcome: Outcome = Outcome.REVIEW
    # External scoring: empty URL = off. Scores SCORE_MIN..SCORE_MAX.
    scoring_url: str = ""
    scoring_timeout_ms: int = 500
    scoring: Threshold = Threshold(review_above=50, deny_above=90)
    scoring_failure_outcome: Outcome = Outcome.REVIEW


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskFacts:
    """What the rules look at. Counts and sums of earlier attempts exclude this request."""

    direction: Direction
    player_id: str
    currency: str
    amount_minor: int
    instrument_id: str = ""
    country: str = ""
    player_attempts: int = 0
    player_amount_minor: int = 0
    instrument_attempts: int = 0
    instrument_amount_minor: int = 0
    instrument_other_players: int = 0
    # Withdrawals: the wallet's deposits and net bets in the wagering window.
    deposited_minor: int = 0
    wagered_minor: int = 0


@dataclass(frozen=True, slots=True)
class RuleResult:
    code: str
    outcome: Outcome
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "outcome": self.outcome.value, "message": self.message}


class RiskDenied(Refused):
    """The rules deny the request: nothing reached the wallet or the PSP (HTTP 422)."""

    code = "RISK_DENIED"

    def __init__(self, *, payment_id: str, reasons: list[RuleResult]) -> None:
        codes = ", ".join(r.code for r in reasons) or "denied"
        super().__init__(f"refused by the risk rules ({codes})")
        self.payment_id = payment_id
        self.reasons = reasons


def strictest(results: list[RuleResult]) -> Outcome:
    """The decision: deny beats review beats allow; no rules means allow."""
    return max((r.outcome for r in results), key=_SEVERITY.__getitem__, default=Outcome.ALLOW)


def reasons(results: list[RuleResult]) -> list[RuleResult]:
    """The results that fired (review or deny), strictest first."""
    fired = [r for r in results if r.outcome is not Outcome.ALLOW]
    return sorted(fired, key=lambda r: -_SEVERITY[r.outcome])


def evaluate(policy: RiskPolicy, facts: RiskFacts) -> list[RuleResult]:
    """One result per rule that applies to this request (silent rules answer allow)."""
    if not policy.enabled:
        return []
    results = [
        _threshold("VELOCITY_PLAYER_COUNT", policy.player_count, facts.player_attempts + 1,
                   f"{{value}} {facts.direction} attempts by this player in "
                   f"{policy.window_s} s"),
        _amount_velocity("VELOCITY_PLAYER_AMOUNT", policy.player_amount_minor, facts,
                         facts.player_amount_minor, "this player", policy.window_s),
        _threshold("AMOUNT_THRESHOLD", policy.amount_minor.get(facts.currency, Threshold()),
                   facts.amount_minor, f"{{value}} {facts.currency} minor units in one "
                                       f"{facts.direction}"),
    ]
    if facts.instrument_id:
        results += [
            _threshold("VELOCITY_INSTRUMENT_COUNT", policy.instrument_count,
                       facts.instrument_attempts + 1,
                       f"{{value}} {facts.direction} attempts with this instrument in "
                       f"{policy.window_s} s"),
            _amount_velocity("VELOCITY_INSTRUMENT_AMOUNT", policy.instrument_amount_minor,
                             facts, facts.instrument_amount_minor, "this instrument",
                             policy.window_s),
            _threshold("INSTRUMENT_SHARED", policy.instrument_players,
                       facts.instrument_other_players,
                       f"{{value}} other players used this instrument in "
                       f"{policy.instrument_players_window_s} s"),
        ]
    if facts.direction is Direction.WITHDRAWAL and policy.wagering_percent_min:
        results.append(_wagering(policy, facts))
    if facts.country and facts.country in policy.country_currencies:
        results.append(_country(policy, facts))
    return results


def _threshold(code: str, threshold: Threshold, value: int, what: str) -> RuleResult:
    outcome = threshold.outcome(value)
    described = what.format(value=value)
    if outcome is Outcome.ALLOW:
        return RuleResult(code, outcome, f"{described}: within limits")
    return RuleResult(code, outcome, f"{described}: above the {outcome} limit "
                                     f"{threshold.limit(outcome)}")


def _amount_velocity(code: str, limits: Mapping[str, Threshold], facts: RiskFacts,
                     earlier_minor: int, who: str, window_s: int) -> RuleResult:
    return _threshold(code, limits.get(facts.currency, Threshold()),
                      earlier_minor + facts.amount_minor,
                      f"{{value}} {facts.currency} minor units of {facts.direction}s by "
                      f"{who} in {window_s} s")


def _wagering(policy: RiskPolicy, facts: RiskFacts) -> RuleResult:
    code = "WITHDRAWAL_WITHOUT_WAGERING"
    required_minor = -(-facts.deposited_minor * policy.wagering_percent_min // 100)  # ceil
    described = (f"bets of {facts.wagered_minor} against deposits of {facts.deposited_minor} "
                 f"{facts.currency} minor units in {policy.wagering_window_s} s")
    if facts.deposited_minor <= 0 or facts.wagered_minor >= required_minor:
        return RuleResult(code, Outcome.ALLOW, f"{described}: enough")
    return RuleResult(code, policy.wagering_outcome,
                      f"{described}: below the {policy.wagering_percent_min}% required "
                      f"({required_minor})")


def _country(policy: RiskPolicy, facts: RiskFacts) -> RuleResult:
    code = "COUNTRY_CURRENCY_MISMATCH"
    allowed = policy.country_currencies[facts.country]
    if facts.currency in allowed:
        return RuleResult(code, Outcome.ALLOW, f"{facts.currency} is used in {facts.country}")
    return RuleResult(code, policy.country_outcome,
                      f"{facts.currency} is not a currency of {facts.country} (expected "
                      f"{', '.join(sorted(allowed))})")


def score_result(policy: RiskPolicy, score: float) -> RuleResult:
    outcome = policy.scoring.outcome(score)
    if outcome is Outcome.ALLOW:
        return RuleResult("SCORE", outcome, f"external score {score:g}: within limits")
    return RuleResult("SCORE", outcome, f"external score {score:g}: above the {outcome} "
                                        f"limit {policy.scoring.limit(outcome)}")


def scoring_failed(policy: RiskPolicy, why: str) -> RuleResult:
    """The scorer did not answer usefully: the configured fail-safe answer applies."""
    return RuleResult("SCORING_UNAVAILABLE", policy.scoring_failure_outcome,
                      f"external scoring failed ({why}); fail-safe answer "
                      f"{policy.scoring_failure_outcome}")


@dataclass(frozen=True, slots=True)
class Screening:
    """A stored decision about one payment."""

    payment_id: str
    outcome: Outcome
    results: tuple[RuleResult, ...]
    review_status: str | None = None
    scoring: dict[str, Any] | None = None

    @property
    def held(self) -> bool:
        """Waiting for support: nothing goes to the PSP until approved."""
        return self.outcome is Outcome.REVIEW and self.review_status == "pending"

    @property
    def rejected(self) -> bool:
        return self.outcome is Outcome.REVIEW and self.review_status == "rejected"

    @property
    def reasons(self) -> list[RuleResult]:
        return reasons(list(self.results))

    def view(self) -> dict[str, Any]:
        view: dict[str, Any] = {"decision": self.outcome.value,
                                "reasons": [r.to_json() for r in self.reasons]}
        if self.review_status:
            view["review"] = self.review_status
        return view
