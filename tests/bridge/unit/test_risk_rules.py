"""The risk rules, table-driven: each fires on the traffic it describes and stays silent on
normal traffic; the decision is the strictest; the settings are validated naming the field."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gateway_bridge import config
from gateway_bridge.risk.rules import (
    Outcome,
    RiskFacts,
    RiskPolicy,
    RuleResult,
    Threshold,
    evaluate,
    reasons,
    score_result,
    scoring_failed,
    strictest,
)
from gateway_bridge.shared.terms import Direction

POLICY = RiskPolicy(
    player_count=Threshold(review_above=5, deny_above=10),
    player_amount_minor={"USD": Threshold(review_above=100_000, deny_above=500_000)},
    instrument_count=Threshold(review_above=5, deny_above=10),
    instrument_amount_minor={"USD": Threshold(review_above=100_000, deny_above=500_000)},
    amount_minor={"USD": Threshold(review_above=50_000, deny_above=200_000)},
    instrument_players=Threshold(review_above=1, deny_above=3),
    wagering_percent_min=100,
    country_currencies={"DE": frozenset({"EUR"}), "US": frozenset({"USD"})},
    country_outcome=Outcome.DENY,
)
NORMAL = RiskFacts(direction=Direction.WITHDRAWAL, player_id="p1", currency="USD",
                   amount_minor=1_000, instrument_id="card_fp_1", country="US",
                   player_attempts=1, player_amount_minor=2_000, instrument_attempts=1,
                   instrument_amount_minor=2_000, instrument_other_players=0,
                   deposited_minor=5_000, wagered_minor=6_000)


def outcome_of(code: str, facts: RiskFacts, policy: RiskPolicy = POLICY) -> Outcome | None:
    found = [r for r in evaluate(policy, facts) if r.code == code]
    return found[0].outcome if found else None


CASES: list[tuple[str, str, dict[str, Any], Outcome | None]] = [
    # (what, rule code, changes to normal traffic, expected outcome of that rule)
    ("player count normal", "VELOCITY_PLAYER_COUNT", {}, Outcome.ALLOW),
    ("player count at the review limit", "VELOCITY_PLAYER_COUNT",
     {"player_attempts": 4}, Outcome.ALLOW),
    ("player count above review", "VELOCITY_PLAYER_COUNT", {"player_attempts": 5},
     Outcome.REVIEW),
    ("player count above deny", "VELOCITY_PLAYER_COUNT", {"player_attempts": 10},
     Outcome.DENY),
    ("player amount normal", "VELOCITY_PLAYER_AMOUNT", {}, Outcome.ALLOW),
    ("player amount above review", "VELOCITY_PLAYER_AMOUNT",
     {"player_amount_minor": 99_001}, Outcome.REVIEW),
    ("player amount above deny", "VELOCITY_PLAYER_AMOUNT",
     {"player_amount_minor": 499_001}, Outcome.DENY),
    ("player amount: other currency has no limit", "VELOCITY_PLAYER_AMOUNT",
     {"currency": "EUR", "country": "DE", "player_amount_minor": 10**9}, Outcome.ALLOW),
    ("instrument count above review", "VELOCITY_INSTRUMENT_COUNT",
     {"instrument_attempts": 5}, Outcome.REVIEW),
    ("instrument count above deny", "VELOCITY_INSTRUMENT_COUNT",
     {"instrument_attempts": 10}, Outcome.DENY),
    ("instrument amount above deny", "VELOCITY_INSTRUMENT_AMOUNT",
     {"instrument_amount_minor": 499_001}, Outcome.DENY),
    ("no instrument: instrument rules silent", "VELOCITY_INSTRUMENT_COUNT",
     {"instrument_id": "", "instrument_attempts": 100}, None),
    ("amount normal", "AMOUNT_THRESHOLD", {}, Outcome.ALLOW),
    ("amount above review", "AMOUNT_THRESHOLD", {"amount_minor": 50_001}, Outcome.REVIEW),
    ("amount above deny", "AMOUNT_THRESHOLD", {"amount_minor": 200_001}, Outcome.DENY),
    ("instrument used by one other player: allowed", "INSTRUMENT_SHARED",
     {"instrument_other_players": 1}, Outcome.ALLOW),
    ("instrument shared by 2 others", "INSTRUMENT_SHARED", {"instrument_other_players": 2},
     Outcome.REVIEW),
    ("instrument shared by 4 others", "INSTRUMENT_SHARED", {"instrument_other_players": 4},
     Outcome.DENY),
    ("wagered enough", "WITHDRAWAL_WITHOUT_WAGERING", {}, Outcome.ALLOW),
    ("wagered exactly the required 100%", "WITHDRAWAL_WITHOUT_WAGERING",
     {"wagered_minor": 5_000}, Outcome.ALLOW),
    ("withdrawal without wagering", "WITHDRAWAL_WITHOUT_WAGERING", {"wagered_minor": 0},
     Outcome.REVIEW),
    ("wagered a little", "WITHDRAWAL_WITHOUT_WAGERING", {"wagered_minor": 4_999},
     Outcome.REVIEW),
    ("no deposits: nothing to wager", "WITHDRAWAL_WITHOUT_WAGERING",
     {"deposited_minor": 0, "wagered_minor": 0}, Outcome.ALLOW),
    ("deposits are not checked for wagering", "WITHDRAWAL_WITHOUT_WAGERING",
     {"direction": Direction.DEPOSIT, "wagered_minor": 0}, None),
    ("country uses the currency", "COUNTRY_CURRENCY_MISMATCH", {}, Outcome.ALLOW),
    ("country/currency mismatch", "COUNTRY_CURRENCY_MISMATCH", {"country": "DE"},
     Outcome.DENY),
    ("country not configured: silent", "COUNTRY_CURRENCY_MISMATCH", {"country": "FR"}, None),
    ("no country: silent", "COUNTRY_CURRENCY_MISMATCH", {"country": ""}, None),
]


@pytest.mark.parametrize(("what", "code", "changes", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_rule(what: str, code: str, changes: dict[str, Any],
              expected: Outcome | None) -> None:
    """Each rule answers as the table says on the traffic the row describes."""
    assert outcome_of(code, replace(NORMAL, **changes)) == expected, what


def test_normal_traffic_is_allowed_by_every_rule() -> None:
    """Ordinary traffic: every rule applies and none fires."""
    results = evaluate(POLICY, NORMAL)
    assert {r.code for r in results} == {
        "VELOCITY_PLAYER_COUNT", "VELOCITY_PLAYER_AMOUNT", "AMOUNT_THRESHOLD",
        "VELOCITY_INSTRUMENT_COUNT", "VELOCITY_INSTRUMENT_AMOUNT", "INSTRUMENT_SHARED",
        "WITHDRAWAL_WITHOUT_WAGERING", "COUNTRY_CURRENCY_MISMATCH"}
    assert strictest(results) is Outcome.ALLOW and reasons(results) == []


def test_default_policy_is_silent_on_ordinary_traffic() -> None:
    """The defaults keep today's behaviour: no amount, wagering or country rule is on."""
    big = replace(NORMAL, amount_minor=10**12, wagered_minor=0, country="DE")
    assert strictest(evaluate(RiskPolicy(), big)) is Outcome.ALLOW


def test_disabled_policy_evaluates_nothing() -> None:
    assert evaluate(replace(POLICY, enabled=False), replace(NORMAL, amount_minor=10**9)) == []


def test_decision_is_the_strictest_and_all_reasons_are_kept() -> None:
    """Deny beats review beats allow; every fired rule is a reason, strictest first."""
    facts = replace(NORMAL, amount_minor=60_000, player_attempts=20)
    results = evaluate(POLICY, facts)
    assert strictest(results) is Outcome.DENY
    fired = reasons(results)
    assert [r.code for r in fired][0] == "VELOCITY_PLAYER_COUNT"
    assert {r.code for r in fired} == {"VELOCITY_PLAYER_COUNT", "AMOUNT_THRESHOLD"}
    assert all(r.message for r in fired)
    assert strictest([]) is Outcome.ALLOW


@pytest.mark.parametrize(("score", "expected"), [
    (0, Outcome.ALLOW), (50, Outcome.ALLOW), (50.5, Outcome.REVIEW), (90, Outcome.REVIEW),
    (91, Outcome.DENY), (100, Outcome.DENY)])
def test_score_maps_to_outcome(score: float, expected: Outcome) -> None:
    """Scores above review_above (50) review, above deny_above (90) deny."""
    assert score_result(POLICY, score).outcome is expected


@pytest.mark.parametrize("fail_safe", list(Outcome))
def test_scoring_failure_takes_the_fail_safe(fail_safe: Outcome) -> None:
    result = scoring_failed(replace(POLICY, scoring_failure_outcome=fail_safe), "timeout")
    assert result == RuleResult("SCORING_UNAVAILABLE", fail_safe, result.message)
    assert "timeout" in result.message


BASE_ENV = {"DATABASE_URL": "postgresql://x/y", "BRIDGE_WALLET_TOKEN": "t" * 20,
            "BRIDGE_API_KEYS": '{"cashier": "0123456789abcdef", "support": "fedcba9876543210"}',
            "BRIDGE_STRIPE_API_KEY": "sk", "BRIDGE_STRIPE_WEBHOOK_SECRET": "whsec_x",
            "BRIDGE_STRIPE_BASE_URL": "http://127.0.0.1:1/stripe"}


def test_risk_settings_parse() -> None:
    s = config.load({**BASE_ENV,
                     "BRIDGE_RISK_AMOUNT_MINOR": '{"USD": [1000, 5000], "EUR": [0, 9000]}',
                     "BRIDGE_RISK_COUNTRY_CURRENCIES": '{"DE": ["EUR"]}',
                     "BRIDGE_RISK_PLAYER_COUNT_REVIEW_ABOVE": "3",
                     "BRIDGE_RISK_WAGERING_PERCENT_MIN": "100",
                     "BRIDGE_RISK_WAGERING_DECISION": "deny",
                     "BRIDGE_RISK_SCORING_URL": "http://127.0.0.1:9/score",
                     "BRIDGE_RISK_SCORING_FAILURE_DECISION": "allow",
                     "BRIDGE_RISK_SUPPORT_CLIENTS": "support"})
    risk = s.risk
    assert risk.amount_minor["USD"] == Threshold(1000, 5000)
    assert risk.amount_minor["EUR"] == Threshold(0, 9000)
    assert risk.country_currencies == {"DE": frozenset({"EUR"})}
    assert risk.player_count == Threshold(3, 500)
    assert risk.wagering_outcome is Outcome.DENY
    assert risk.scoring_failure_outcome is Outcome.ALLOW
    assert s.risk_support_clients == {"support"}


@pytest.mark.parametrize(("env", "field"), [
    ({"BRIDGE_RISK_AMOUNT_MINOR": '{"XXX": [1, 2]}'}, "BRIDGE_RISK_AMOUNT_MINOR"),
    ({"BRIDGE_RISK_AMOUNT_MINOR": '{"USD": [5, 2]}'}, "BRIDGE_RISK_AMOUNT_MINOR[USD]"),
    ({"BRIDGE_RISK_AMOUNT_MINOR": "[1]"}, "BRIDGE_RISK_AMOUNT_MINOR"),
    ({"BRIDGE_RISK_PLAYER_AMOUNT_MINOR": '{"USD": [1.5, 2]}'},
     "BRIDGE_RISK_PLAYER_AMOUNT_MINOR"),
    ({"BRIDGE_RISK_WINDOW_S": "0"}, "BRIDGE_RISK_WINDOW_S"),
    ({"BRIDGE_RISK_PLAYER_COUNT_REVIEW_ABOVE": "9", "BRIDGE_RISK_PLAYER_COUNT_DENY_ABOVE": "5"},
     "BRIDGE_RISK_PLAYER_COUNT_REVIEW_ABOVE"),
    ({"BRIDGE_RISK_SCORING_DENY_ABOVE": "101"}, "BRIDGE_RISK_SCORING_DENY_ABOVE"),
    ({"BRIDGE_RISK_SCORING_TIMEOUT_MS": "5"}, "BRIDGE_RISK_SCORING_TIMEOUT_MS"),
    ({"BRIDGE_RISK_SCORING_URL": "ftp://x"}, "BRIDGE_RISK_SCORING_URL"),
    ({"BRIDGE_RISK_SCORING_FAILURE_DECISION": "maybe"},
     "BRIDGE_RISK_SCORING_FAILURE_DECISION"),
    ({"BRIDGE_RISK_WAGERING_DECISION": "allow"}, "BRIDGE_RISK_WAGERING_DECISION"),
    ({"BRIDGE_RISK_COUNTRY_CURRENCIES": '{"de": ["EUR"]}'}, "BRIDGE_RISK_COUNTRY_CURRENCIES"),
    ({"BRIDGE_RISK_COUNTRY_CURRENCIES": '{"DE": []}'}, "BRIDGE_RISK_COUNTRY_CURRENCIES"),
    ({"BRIDGE_RISK_WAGERING_PERCENT_MIN": "-1"}, "BRIDGE_RISK_WAGERING_PERCENT_MIN"),
    ({"BRIDGE_RISK_ENABLED": "perhaps"}, "BRIDGE_RISK_ENABLED"),
    ({"BRIDGE_RISK_SUPPORT_CLIENTS": "nobody"}, "BRIDGE_RISK_SUPPORT_CLIENTS"),
])
def test_bad_risk_settings_are_named(env: dict[str, str], field: str) -> None:
    """Each bad risk setting stops start-up with a message that names it."""
    with pytest.raises(config.SettingsError) as caught:
        config.load({**BASE_ENV, **env})
    assert any(p.startswith(field) for p in caught.value.problems), caught.value.problems
