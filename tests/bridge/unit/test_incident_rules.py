"""Incident rules, lifecycle and report as plain functions (no I/O): each rule fires at its
threshold and stays quiet just below it; the lifecycle allows exactly support's steps; the
report shows money exactly and renders every section."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway_bridge import config
from gateway_bridge.incidents.rules import (
    Affected,
    CallbackErrors,
    DepositOutcomes,
    Found,
    GatewayHealth,
    IncidentPolicy,
    LifecycleError,
    Measurements,
    Rule,
    Stage,
    check_move,
    check_resolve,
    evaluate,
    money_at_risk,
)
from gateway_bridge.support import report

POLICY = IncidentPolicy(deposit_finished_min=10, deposit_failure_percent=30,
                        withdrawal_delayed_min=2, callback_errors_min=5, mismatch_min=1,
                        timeout_min=1, probe_failures_min=3)


def _pay(n: int, *, currency: str = "EUR", amount: int = 10_00) -> tuple[Affected, ...]:
    return tuple(Affected(payment_id=f"pay_{i}", player_id=f"p{i % 2}", currency=currency,
                          amount_minor=amount, state="x") for i in range(n))


def _found(total: int, listed: int | None = None) -> Found:
    return Found(total=total, listed=_pay(total if listed is None else listed))


def _fired(m: Measurements, rule: Rule) -> dict[str, bool]:
    return {f.scope: f.fired for f in evaluate(POLICY, m) if f.rule is rule}


@pytest.mark.parametrize(("succeeded", "failed", "fires"), [
    (7, 3, True),     # 30 % of 10: at the threshold
    (8, 2, False),    # 20 %
    (14, 6, True),    # exactly 30 % of 20
    (15, 6, False),   # 28.57 %: integer comparison, no rounding up
    (0, 9, False),    # all failed, but fewer than 10 finished: too few to judge
    (0, 10, True),
    (0, 0, False),
])
def test_failed_deposits_fire_on_the_failure_share_with_enough_finished(
        succeeded: int, failed: int, fires: bool) -> None:
    """The failure share per PSP/method compared in integers, with a minimum sample."""
    m = Measurements(psps=("stripe",), deposits=(DepositOutcomes(
        psp="stripe", method="card", succeeded=succeeded, failed=failed),),
        failed_deposits={"stripe/card": _found(failed)})
    finding = next(f for f in evaluate(POLICY, m) if f.rule is Rule.FAILED_DEPOSITS)
    assert (finding.scope, finding.fired) == ("stripe/card", fires)
    assert len(finding.affected) == (failed if fires else 0)


@pytest.mark.parametrize(("rule", "field", "below", "at"), [
    (Rule.DELAYED_WITHDRAWALS, "delayed_withdrawals", 1, 2),
    (Rule.CURRENCY_MISMATCH, "mismatches", 0, 1),
    (Rule.TRANSACTION_TIMEOUT, "timeouts", 0, 1),
])
def test_counted_rules_fire_at_their_minimum_per_psp(rule: Rule, field: str, below: int,
                                                     at: int) -> None:
    """Each PSP judged on its own: one at the minimum fires, the other below it is quiet."""
    m = Measurements(psps=("adyen", "stripe"),
                     **{field: {"stripe": _found(at), "adyen": _found(below)}})
    assert _fired(m, rule) == {"stripe": True, "adyen": False}


def test_rules_count_every_payment_but_copy_only_the_listed_ones() -> None:
    """The count decides (600 timed out, 3 listed): the list is bounded, the verdict is not."""
    m = Measurements(psps=("adyen",), timeouts={"adyen": _found(600, listed=3)})
    finding = next(f for f in evaluate(POLICY, m) if f.rule is Rule.TRANSACTION_TIMEOUT)
    assert finding.fired and finding.observed["payments"] == 600
    assert len(finding.affected) == 3 and "600" in finding.summary


def test_callback_errors_add_up_every_cause_including_unknown_payments() -> None:
    """Signature failures, malformed bodies and events for unknown payments count together."""
    m = Measurements(psps=("stripe", "adyen"), callback_errors=(
        CallbackErrors(psp="stripe", by_cause={"signature": 3, "unknown_payment": 2}),
        CallbackErrors(psp="adyen", by_cause={"malformed": 4})))
    findings = {f.scope: f for f in evaluate(POLICY, m) if f.rule is Rule.CALLBACK_ERRORS}
    assert (findings["stripe"].fired, findings["adyen"].fired) == (True, False)
    assert "3 signature" in findings["stripe"].summary
    assert findings["stripe"].observed["errors"] == 5


@pytest.mark.parametrize(("probes", "circuit_open", "fires"), [
    ((False, False, False), False, True),
    ((False, False, True), False, False),     # the newest two failed: not yet
    ((True, False, False, False), False, False),  # up again on the newest
    ((), True, True),                          # the breaker alone is enough
    ((), False, False),                        # no recent probes: no verdict
])
def test_gateway_downtime_needs_failed_probes_in_a_row_or_an_open_breaker(
        probes: tuple[bool, ...], circuit_open: bool, fires: bool) -> None:
    """Consecutive failures counted from the newest probe; in-flight payments are at risk."""
    m = Measurements(psps=("adyen",), gateways=(GatewayHealth(
        psp="adyen", recent_probes=probes, circuit_open=circuit_open),),
        in_flight={"adyen": _found(2)})
    finding = next(f for f in evaluate(POLICY, m) if f.rule is Rule.GATEWAY_DOWNTIME)
    assert finding.fired is fires
    assert len(finding.affected) == (2 if fires else 0)


def test_normal_measurements_fire_nothing() -> None:
    """Healthy traffic everywhere: every rule reports every scope, none fires."""
    m = Measurements(psps=("stripe", "adyen"), deposits=(
        DepositOutcomes(psp="stripe", method="card", succeeded=50, failed=2),),
        gateways=(GatewayHealth(psp="stripe", recent_probes=(True,) * 3, circuit_open=False),
                  GatewayHealth(psp="adyen", recent_probes=(True,) * 3, circuit_open=False)))
    findings = evaluate(POLICY, m)
    assert {f.rule for f in findings} == set(Rule)
    assert not [f for f in findings if f.fired]


def test_money_at_risk_is_summed_per_currency_never_across() -> None:
    assert money_at_risk([*_pay(2, currency="EUR", amount=5_00),
                          *_pay(1, currency="BTC", amount=1234)]) == {"BTC": 1234,
                                                                       "EUR": 10_00}


@pytest.mark.parametrize(("current", "target", "allowed"), [
    (Stage.DETECTED, Stage.DIAGNOSING, True),
    (Stage.DETECTED, Stage.CORRECTING, False),
    (Stage.DIAGNOSING, Stage.CORRECTING, True),
    (Stage.CORRECTING, Stage.VALIDATING, True),
    (Stage.VALIDATING, Stage.CORRECTING, True),
    (Stage.VALIDATING, Stage.DIAGNOSING, False),
    (Stage.RESOLVED, Stage.CORRECTING, False),
])
def test_lifecycle_moves_one_step_as_support_works(current: Stage, target: Stage,
                                                   allowed: bool) -> None:
    if allowed:
        check_move(current, target)
    else:
        with pytest.raises(LifecycleError):
            check_move(current, target)


@pytest.mark.parametrize(("current", "clear", "forced", "allowed"), [
    (Stage.VALIDATING, True, False, True),
    (Stage.VALIDATING, False, False, False),   # the condition still holds
    (Stage.CORRECTING, True, False, False),    # not validated yet
    (Stage.DETECTED, False, True, True),       # a false alarm, said explicitly
    (Stage.RESOLVED, True, True, False),
])
def test_resolve_needs_validation_with_the_condition_clear_unless_forced(
        current: Stage, clear: bool, forced: bool, allowed: bool) -> None:
    if allowed:
        check_resolve(current, condition_clear=clear, forced=forced)
    else:
        with pytest.raises(LifecycleError):
            check_resolve(current, condition_clear=clear, forced=forced)


def test_incident_settings_come_from_the_environment_and_are_bounded() -> None:
    base = {"DATABASE_URL": "postgresql://x/y", "BRIDGE_WALLET_TOKEN": "t" * 20,
            "BRIDGE_API_KEYS": '{"c": "0123456789abcdef"}',
            "BRIDGE_STRIPE_API_KEY": "sk_test_x", "BRIDGE_STRIPE_WEBHOOK_SECRET": "whsec_x",
            "BRIDGE_STRIPE_BASE_URL": "http://127.0.0.1:1/stripe"}
    s = config.load({**base, "BRIDGE_INCIDENT_DEPOSIT_FAILURE_PERCENT": "45",
                     "BRIDGE_INCIDENT_WITHDRAWAL_SLA_S": "7200"})
    assert (s.incidents.deposit_failure_percent, s.incidents.withdrawal_sla_s) == (45, 7200)
    with pytest.raises(config.SettingsError, match="BRIDGE_INCIDENT_DEPOSIT_FAILURE_PERCENT"):
        config.load({**base, "BRIDGE_INCIDENT_DEPOSIT_FAILURE_PERCENT": "150"})


@pytest.mark.parametrize(("amount", "currency", "text"), [
    (12345, "EUR", "123.45 EUR"), (5, "USD", "0.05 USD"), (1500, "JPY", "1500 JPY"),
    (123456789, "BTC", "1.23456789 BTC"), (7, "XTS", "7 minor units of XTS"),
])
def test_report_money_is_exact(amount: int, currency: str, text: str) -> None:
    assert report.money(amount, currency) == text


def _incident(**changes: Any) -> dict[str, Any]:
    at = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    incident: dict[str, Any] = {
        "id": 7, "rule": "failed_deposits", "scope": "stripe/card", "psp": "stripe",
        "stage": "resolved", "summary": "6 of 10 deposits failed", "observed": {},
        "detected_at": at, "last_seen_at": at, "cleared_at": at + timedelta(minutes=30),
        "acknowledged_by": "ana", "acknowledged_at": at + timedelta(minutes=5),
        "resolved_by": "ana", "resolved_at": at + timedelta(minutes=90),
        "cause": "issuer outage at the acquirer", "resolution": "failed over to adyen",
        "payments": 2, "players": 1, "at_risk": {"EUR": 30_00},
        "timeline": [
            {"at": at, "kind": "detected", "actor": "detector", "text": "6 of 10 failed",
             "data": None},
            {"at": at + timedelta(minutes=5), "kind": "note", "actor": "ana",
             "text": "declines are all 'issuer unavailable'", "data": None},
            {"at": at + timedelta(minutes=20), "kind": "action", "actor": "ana",
             "text": "routed card deposits to adyen", "data": None},
            {"at": at + timedelta(minutes=30), "kind": "cleared", "actor": "detector",
             "text": "the condition is clear", "data": None}],
        "timeline_length": 4,
        "states_now": [{"state": "failed", "payments": 1, "waiting": 0},
                       {"state": "timed_out", "payments": 1, "waiting": 1}],
        "affected": [
            {"payment_id": "pay_a", "player_id": "p|1", "currency": "EUR",
             "amount_minor": 10_00, "state_seen": "failed", "state_now": "failed",
             "attention": None},
            {"payment_id": "pay_b", "player_id": "p|1", "currency": "EUR",
             "amount_minor": 20_00, "state_seen": "failed", "state_now": "timed_out",
             "attention": "waiting"}],
    }
    incident.update(changes)
    return incident


def test_report_covers_detection_cause_correction_validation_and_impact() -> None:
    text = report.render_markdown(_incident(), chart_file="incident-7.png",
                                  generated_at=datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    for heading in ("## Detection", "## Cause", "## Correction", "## Validation",
                    "## Impact", "## Timeline", "## Affected payments"):
        assert heading in text
    assert "issuer outage at the acquirer" in text
    assert "- 2026-11-24 10:20:00 UTC (ana): routed card deposits to adyen" in text
    assert "| Money at risk | 30.00 EUR |" in text
    assert "| Duration | 1 h 30 min |" in text
    assert "still waiting for an answer or a decision: 1" in text
    assert "| timed_out | 1 | 1 |" in text and "left out" not in text
    assert "p\\|1" in text  # a pipe in a value does not break the table
    assert "![" in text and "(incident-7.png)" in text


def test_report_of_an_open_incident_says_what_is_missing() -> None:
    text = report.render_markdown(
        _incident(stage="diagnosing", resolved_at=None, resolved_by=None, cause=None,
                  resolution=None, affected=[], payments=0, players=0, at_risk={},
                  states_now=[], timeline_length=1500),
        chart_file=None, generated_at=datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    assert "| Duration | open |" in text
    assert "_Not written down yet" in text and "money at risk none measured" in text
    assert "None recorded" in text and "![" not in text
    assert "1496 events in the middle are left out" in text
