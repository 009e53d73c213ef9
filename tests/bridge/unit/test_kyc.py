"""KYC's pure parts: the lifecycle, the gates, and Onfido's webhook signature."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest
from onfido.webhook_event_verifier import (  # Onfido's official SDK, a test dependency
    OnfidoInvalidSignatureError,
    WebhookEventVerifier,
)

from gateway_bridge.kyc import model, onfido
from gateway_bridge.kyc.model import CheckResult, KycState, Verification
from gateway_bridge.psp.base import WebhookRejected
from psp_simulator import config as sim_config
from psp_simulator.onfido_api import OnfidoSim, _Check
from psp_simulator.state import Simulator
from tests.bridge.conftest import PSP_ENV

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)
TODAY = NOW.date()
TOKEN = "onfido_webhook_token"


def pending(check_id: str = "chk_1") -> Verification:
    return model.started(Verification(player_id="p1"), provider="onfido", applicant_id="app",
                         check_id=check_id, now=NOW)


def test_only_the_current_checks_first_answer_counts() -> None:
    v = pending()
    assert (v.state, v.checks_started) == (KycState.PENDING, 1)
    clear = CheckResult(check_id="chk_1", clear=True, birth_date=date(1990, 1, 1),
                        country="GBR")
    verified = model.answered(v, clear, now=NOW)
    assert verified is not None and verified.state is KycState.VERIFIED
    assert model.answered(verified, clear, now=NOW) is None, "answered already"
    assert model.answered(v, CheckResult(check_id="chk_0", clear=True), now=NOW) is None
    rejected = model.answered(v, CheckResult(check_id="chk_1", clear=False), now=NOW)
    assert rejected is not None and rejected.state is KycState.REJECTED
    again = model.started(rejected, provider="onfido", applicant_id="app", check_id="chk_2",
                          now=NOW)
    assert (again.state, again.check_id, again.checks_started) == (KycState.PENDING,
                                                                   "chk_2", 2)


def test_documents_out_of_date_expire_a_verification() -> None:
    v = Verification(player_id="p1", state=KycState.VERIFIED,
                     documents_expire_on=date(2026, 12, 3))
    assert model.current(v, TODAY).state is KycState.EXPIRED
    assert model.withdrawal_gate(model.current(v, TODAY)) is not None


def gate(v: Verification, *, deposited: int = 0, amount: int = 100) -> str | None:
    found = model.deposit_gate(v, deposited_minor=deposited, amount_minor=amount,
                               threshold_minor=200_000, today=TODAY,
                               min_age_by_country={"USA": 21}, min_age_default=18,
                               blocked_countries={"PRK"})
    return None if found is None else found.code


def test_the_deposit_gates() -> None:
    unverified = Verification(player_id="p1")
    assert gate(unverified, deposited=199_900, amount=100) is None
    assert gate(unverified, deposited=199_900, amount=101) == "KYC_REQUIRED"
    adult = Verification(player_id="p1", state=KycState.VERIFIED,
                         birth_date=date(2008, 12, 4), country="GBR")
    assert gate(adult, deposited=10**9) is None, "18 today"
    assert gate(Verification(player_id="p1", state=KycState.VERIFIED,
                             birth_date=date(2008, 12, 5), country="GBR")) == "UNDERAGE"
    assert gate(Verification(player_id="p1", state=KycState.VERIFIED,
                             birth_date=date(2006, 1, 1), country="USA")) == "UNDERAGE"
    assert gate(Verification(player_id="p1", state=KycState.VERIFIED,
                             birth_date=date(1980, 1, 1), country="PRK")) == "COUNTRY_BLOCKED"


def body(action: str = "check.completed") -> bytes:
    return orjson.dumps({"payload": {"resource_type": "check", "action": action, "object": {
        "id": "chk_1", "status": "complete", "completed_at_iso8601": "2026-12-04T12:00:00Z"}}})


def test_onfido_signatures_are_checked_on_the_raw_body() -> None:
    raw = body()
    event = onfido.read_webhook({"X-SHA2-Signature": onfido.signature(TOKEN, raw)}, raw,
                                token=TOKEN)
    assert (event.action, event.check_id) == ("check.completed", "chk_1")
    cases = {
        "unsigned": {},
        "signature": {"x-sha2-signature": onfido.signature("another", raw)},
        "malformed": {"X-SHA2-Signature": "00"},
    }
    for cause, headers in cases.items():
        with pytest.raises(WebhookRejected) as rejected:
            onfido.read_webhook(headers, raw, token=TOKEN)
        assert rejected.value.cause == cause
    altered = raw.replace(b"chk_1", b"chk_2")
    with pytest.raises(WebhookRejected) as rejected:
        onfido.read_webhook({"X-SHA2-Signature": onfido.signature(TOKEN, raw)}, altered,
                            token=TOKEN)
    assert rejected.value.cause == "signature"
    garbage = b'{"payload": 1}'
    with pytest.raises(WebhookRejected) as rejected:
        onfido.read_webhook({"X-SHA2-Signature": onfido.signature(TOKEN, garbage)}, garbage,
                            token=TOKEN)
    assert rejected.value.cause == "malformed"


def test_the_simulators_webhooks_are_real_onfido_webhooks() -> None:
    """Onfido's official SDK verifies and parses what the simulator sends, and so does the
    bridge: the two signers agree."""
    settings = sim_config.load({**PSP_ENV, "SIM_LISTEN_ADDR": "127.0.0.1:0"})
    token = settings.onfido_webhook_token
    check = _Check(id="chk_9", applicant_id="app_1", status="complete", result="clear",
                   completed_at="2026-12-04T12:00:00Z")
    hook = OnfidoSim(Simulator(settings))._webhook(check, forged=False)
    headers = hook.headers(hook.body, 0)
    event = WebhookEventVerifier(token).read_payload(hook.body.decode(),
                                                     headers["X-SHA2-Signature"])
    assert event is not None and event.payload is not None
    assert event.payload.object is not None and event.payload.object.id == "chk_9"
    assert onfido.read_webhook(headers, hook.body, token=token).check_id == "chk_9"
    forged = OnfidoSim(Simulator(settings))._webhook(check, forged=True)
    with pytest.raises(OnfidoInvalidSignatureError):
        WebhookEventVerifier(token).read_payload(
            forged.body.decode(), forged.headers(forged.body, 0)["X-SHA2-Signature"])


def test_a_verification_without_birth_date_or_country_is_not_enough() -> None:
    """Fail closed: the gates can't be applied without both."""
    assert gate(Verification(player_id="p1", state=KycState.VERIFIED,
                             birth_date=date(1980, 1, 1))) == "KYC_REQUIRED"
    assert gate(Verification(player_id="p1", state=KycState.VERIFIED,
                             country="GBR")) == "KYC_REQUIRED"


def test_a_rejected_player_stays_refused_while_a_re_check_runs() -> None:
    rejected = model.answered(pending(), CheckResult(check_id="chk_1", clear=False), now=NOW)
    assert rejected is not None
    allowed = model.cash_out_allowed(rejected, now=NOW)
    again = model.started(allowed, provider="onfido", applicant_id="app", check_id="chk_2",
                          now=NOW)
    assert gate(again) == "KYC_REJECTED"
    assert model.withdrawal_gate(again) is None, "support's decision still holds"
    cleared = model.answered(again, CheckResult(check_id="chk_2", clear=True,
                                                birth_date=date(1980, 1, 1), country="GBR"),
                             now=NOW)
    assert cleared is not None and not cleared.was_rejected and gate(cleared) is None


def test_the_wallet_restriction_follows_a_clear_verification() -> None:
    rules = {"today": date(2026, 12, 4), "min_age_by_country": {"USA": 21},
             "min_age_default": 18, "blocked_countries": {"PRK"}}
    verified = Verification(player_id="p", state=KycState.VERIFIED,
                            birth_date=date(2007, 6, 1), country="USA")
    assert model.play_restriction(verified, **rules) == "UNDERAGE:2028-06-01"
    assert model.play_restriction(replace(verified, country="MLT"), **rules) == ""
    assert model.play_restriction(replace(verified, country="PRK"), **rules) == \
        "COUNTRY_BLOCKED"
    # An expiry or rejection does not make the player older: the last one stands.
    expired = replace(verified, state=KycState.EXPIRED, restriction="COUNTRY_BLOCKED")
    assert model.play_restriction(expired, **rules) == "COUNTRY_BLOCKED"
    assert model.comes_of_age_on(date(2008, 2, 29), 18) == date(2026, 3, 1)
    # An age restriction ends at noon UTC on the birthday: the day has begun everywhere.
    noon = datetime(2028, 6, 1, 12, tzinfo=UTC)
    assert model.decode_restriction("UNDERAGE:2028-06-01", noon - timedelta(seconds=1)) == (
        "UNDERAGE", noon)
    assert model.decode_restriction("UNDERAGE:2028-06-01", noon) is None
    assert model.decode_restriction("COUNTRY_BLOCKED", noon) == ("COUNTRY_BLOCKED", None)
    assert model.decode_restriction("", noon) is None
