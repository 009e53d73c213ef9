"""The pure rules of a cascade: which declines may go elsewhere, how far a payment may go,
what the inbox does with a charge's decline, and the refund note's lifecycle."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway_bridge.payments.model import (
    CashierRequest,
    Payment,
    PaymentFacts,
    State,
    Verdict,
    apply,
    decide,
    refund_owed,
    refund_settled,
)
from gateway_bridge.psp import declines
from gateway_bridge.psp.declines import Decline, classify, clean_code
from gateway_bridge.routing import settings as routing_settings
from gateway_bridge.routing.rules import Attempt, RoutingDecision
from gateway_bridge.shared.events import EventKind, PspEvent
from gateway_bridge.shared.terms import Direction
from psp_simulator.config import Knobs
from service_kit.settings import EnvReader, SettingsError
from tests.bridge.unit.test_payment_model import payment
from tests.bridge.unit.test_signatures import ADYEN, STRIPE


@pytest.mark.parametrize(("psp", "code", "expected"), [
    ("stripe", "do_not_honor", Decline.SOFT),
    ("stripe", "issuer_not_available", Decline.SOFT),
    ("stripe", "processing_error", Decline.SOFT),
    ("stripe", "stolen_card", Decline.HARD),
    ("stripe", "insufficient_funds", Decline.HARD),
    ("stripe", "fraudulent", Decline.HARD),
    ("stripe", "some_code_stripe_adds_next_year", Decline.HARD),
    ("adyen", "2", Decline.SOFT),
    ("adyen", "9", Decline.SOFT),
    ("adyen", "20", Decline.HARD),
    ("adyen", "12", Decline.HARD),
    ("adyen", "do_not_honor", Decline.HARD),  # another PSP's vocabulary means nothing here
    ("nowpayments", "not_supported", Decline.HARD),
])
def test_each_psp_has_its_own_table_and_unknown_codes_are_hard(
        psp: str, code: str, expected: Decline) -> None:
    assert classify(psp, code) is expected


def test_no_code_is_both_soft_and_hard() -> None:
    assert not declines.STRIPE_SOFT & declines.STRIPE_HARD
    assert not declines.ADYEN_SOFT & declines.ADYEN_HARD


def test_a_cascade_stops_at_the_attempts_bound_and_never_returns_to_a_psp() -> None:
    decision = RoutingDecision("cards", ("adyen", "stripe", "checkout"), ())
    assert decision.next_after("adyen", attempts_max=3) == "stripe"
    assert decision.next_after("adyen", attempts_max=1) is None
    moved = RoutingDecision("cards", ("adyen", "stripe", "checkout"), (),
                            attempts=(Attempt("adyen", "soft decline 9"),))
    assert moved.next_after("stripe", attempts_max=3) == "checkout"
    assert moved.next_after("stripe", attempts_max=2) is None
    tried = RoutingDecision("cards", ("adyen", "stripe"), (),
                            attempts=(Attempt("adyen", "unavailable"),))
    assert tried.next_after("stripe", attempts_max=10) is None


def test_attempts_bound_is_a_bounded_setting() -> None:
    def load(raw: str) -> int:
        reader = EnvReader({"BRIDGE_ROUTING_ATTEMPTS_MAX": raw})
        loaded = routing_settings.load({}, reader, psp_names=["stripe"])
        reader.done()
        return loaded.attempts_max
    assert load("2") == 2
    with pytest.raises(SettingsError, match="BRIDGE_ROUTING_ATTEMPTS_MAX"):
        load("0")
    with pytest.raises(SettingsError, match="BRIDGE_ROUTING_ATTEMPTS_MAX"):
        load("11")


def _failed(kind: EventKind = EventKind.DEPOSIT_FAILED) -> PspEvent:
    return PspEvent(psp="adyen", event_key="k", kind=kind, psp_event_type="AUTHORISATION",
                    payment_id="pay_1", amount_minor=100, currency="EUR")


def test_a_charges_decline_webhook_leaves_the_decision_to_the_cashier() -> None:
    """The webhook of a soft decline can come before the answer the cashier cascades on:
    failing the payment there would stop the cascade."""
    charged = PaymentFacts(Direction.DEPOSIT, State.CREATED, 100, "EUR", charged=True)
    assert decide(charged, _failed(), credit_partial=False).verdict is Verdict.IGNORE
    checkout = PaymentFacts(Direction.DEPOSIT, State.CREATED, 100, "EUR")
    assert decide(checkout, _failed(), credit_partial=False).state is State.FAILED
    # Once the charge went through, a success still credits it once.
    pending = PaymentFacts(Direction.DEPOSIT, State.PENDING, 100, "EUR", charged=True)
    success = decide(pending, _failed(EventKind.DEPOSIT_SUCCEEDED), credit_partial=False)
    assert success.state is State.SUCCEEDED


def _payment(attention: str | None = None) -> Payment:
    request = CashierRequest(direction=Direction.DEPOSIT, player_id="p1", amount_minor=100,
                             currency="EUR", psp="", method="card",
                             payment_token_sha256=CashierRequest.token_digest("pm_card_1234"))
    return replace(payment(), request=request, attention=attention)


def test_the_refund_note_goes_when_refunded_and_names_the_failure_when_not() -> None:
    owed = refund_owed(_payment("event 7 dead-lettered: x; y"), "stripe",
                       "it captured this payment; not credited here; refund 1 queued")
    assert owed.attention is not None and owed.attention.startswith("refund owed at stripe: ")
    assert refund_settled(owed, "stripe").attention == "event 7 dead-lettered: x; y"
    failed = refund_settled(owed, "stripe", "refused")
    assert failed.attention == "refund failed at stripe: refused | event 7 dead-lettered: x; y"
    alone = refund_owed(_payment(), "stripe", "captured")
    assert refund_settled(alone, "stripe").attention is None
    # A note about another PSP stays.
    both = refund_owed(alone, "adyen", "captured too")
    assert refund_settled(both, "stripe").attention == "refund owed at adyen: captured too"
    # Made by hand after it failed: the failure note goes as well.
    assert refund_settled(failed, "stripe").attention == "event 7 dead-lettered: x; y"


def test_a_stored_card_is_kept_only_as_its_digest_and_old_requests_read_alike() -> None:
    request = _payment().request
    stored = request.to_json()
    assert "pm_card_1234" not in str(stored)
    assert stored["payment_token"] == CashierRequest.token_digest("pm_card_1234")
    assert CashierRequest.from_json(Direction.DEPOSIT, stored) == request
    without = CashierRequest(direction=Direction.DEPOSIT, player_id="p1", amount_minor=100,
                             currency="EUR", psp="", method="card")
    assert "payment_token" not in without.to_json()
    assert CashierRequest.from_json(Direction.DEPOSIT, without.to_json()) == without
    assert CashierRequest.token_digest("") == ""


def test_simulator_charge_knobs_are_validated_whole() -> None:
    knobs = Knobs().updated({"approval_by_psp_method": {"stripe": {"card": 0.4}},
                             "soft_decline_share_by_psp": {"adyen": 1},
                             "decline_code_by_psp": {"stripe": "do_not_honor"},
                             "latency_ms_by_psp": {"adyen": 250}})
    assert knobs.approval_for("stripe", "card") == 0.4
    assert knobs.approval_for("adyen", "card") == 1.0
    assert knobs.soft_share_for("adyen") == 1.0
    assert knobs.latency_ms_for("adyen") == 250 and knobs.latency_ms_for("stripe") == 0
    with pytest.raises(ValueError, match="approval_by_psp_method") as bad:
        Knobs().updated({"approval_by_psp_method": {"stripe": {"card": 2}},
                         "latency_ms_by_psp": {"paypal": 5}})
    assert "latency_ms_by_psp" in str(bad.value)


def test_stripe_reports_only_the_payment_intents_the_bridge_charged() -> None:
    """A checkout's payment intent sends payment_intent.succeeded too; its session's events
    already report it, so only the bridge's own charges (metadata bridge_flow) count."""
    def intent_event(metadata: dict[str, str]) -> dict[str, object]:
        return {"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {
            "id": "pi_1", "object": "payment_intent", "amount": 4000, "currency": "usd",
            "metadata": metadata}}}
    charged = STRIPE.event_from(intent_event({"payment_id": "pay_1", "bridge_flow": "charge"}))
    assert (charged.kind, charged.payment_id, charged.psp_reference, charged.amount_minor,
            charged.currency) == (EventKind.DEPOSIT_SUCCEEDED, "pay_1", "pi_1", 4000, "USD")
    checkout = STRIPE.event_from(intent_event({"payment_id": "pay_1"}))
    assert checkout.kind is EventKind.IGNORED


def test_a_new_reason_for_support_keeps_an_owed_refund_in_view() -> None:
    owed = refund_owed(payment(), "adyen", "captured after the cascade")
    wrong = PspEvent(psp="stripe", event_key="e2", kind=EventKind.DEPOSIT_SUCCEEDED,
                     psp_event_type="checkout.session.completed", amount_minor=999,
                     currency="USD")
    d = decide(owed.facts(), wrong, credit_partial=False)
    assert d.state is State.MISMATCH
    after = apply(owed, d, wrong)
    assert after.attention == f"{d.note} | refund owed at adyen: captured after the cascade"


def test_a_capture_of_a_charge_the_bridge_closed_is_refunded_not_credited() -> None:
    closed = PaymentFacts(Direction.DEPOSIT, State.FAILED, 100, "EUR", charged=True)
    late = _failed(EventKind.DEPOSIT_SUCCEEDED)
    d = decide(closed, late, credit_partial=False)
    assert (d.verdict, d.refund_capture) == (Verdict.IGNORE, True)
    # A checkout the bridge closed stays a conflict for support (the player may have paid
    # knowingly at a page that was still open).
    checkout = PaymentFacts(Direction.DEPOSIT, State.FAILED, 100, "EUR")
    d = decide(checkout, late, credit_partial=False)
    assert not d.refund_capture and d.note.startswith("conflict")


def test_refund_outcomes_are_read_from_each_psp() -> None:
    refund = {"id": "re_1", "object": "refund", "amount": 4000, "currency": "usd",
              "payment_intent": "pi_1", "metadata": {"payment_id": "pay_1"}}
    for status, kind in (("succeeded", EventKind.REFUND_SETTLED),
                         ("failed", EventKind.REFUND_FAILED),
                         ("pending", EventKind.IGNORED)):
        event = STRIPE.event_from({"id": "evt_2", "type": "refund.updated",
                                   "data": {"object": {**refund, "status": status}}})
        assert (event.kind, event.psp_reference, event.psp_reference_alt) == (
            kind, "pi_1", "re_1"), status
    item = {"eventCode": "REFUND", "success": "false", "pspReference": "8816000000000002",
            "originalReference": "8816000000000001", "merchantAccountCode": "TestMerchant",
            "merchantReference": "pay_1", "amount": {"value": 4000, "currency": "USD"}}
    event = ADYEN.event_from(item)
    assert (event.kind, event.psp_reference, event.psp_reference_alt) == (
        EventKind.REFUND_FAILED, "8816000000000001", "8816000000000002")
    assert clean_code("9<script>") == "9script" and len(clean_code("x" * 99)) == 40
