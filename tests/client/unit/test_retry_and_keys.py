"""The client's pure rules: which answers are retried and how long it waits, the keys it
derives, and how a rich status becomes an exception."""

from __future__ import annotations

import random
import threading

import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from wallet_client import WalletClient, errors, keys
from wallet_client.retry import RetryPolicy, backoff_ms, next_wait_ms, retryable


@pytest.mark.parametrize("code", ["UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "CANCELLED",
                                  "RESOURCE_EXHAUSTED"])
def test_answers_without_an_outcome_are_retried(code: str) -> None:
    assert retryable(code, "")


@pytest.mark.parametrize(("code", "reason"), [
    ("FAILED_PRECONDITION", "INSUFFICIENT_FUNDS"), ("INVALID_ARGUMENT", "FIELD_INVALID"),
    ("ALREADY_EXISTS", "IDEMPOTENCY_KEY_REUSED"), ("NOT_FOUND", "WALLET_NOT_FOUND"),
    ("PERMISSION_DENIED", "SCOPE_NOT_ALLOWED"), ("UNAUTHENTICATED", "TOKEN_UNKNOWN"),
    ("INTERNAL", ""), ("RESOURCE_EXHAUSTED", "MESSAGE_TOO_LARGE")])
def test_refusals_are_never_retried(code: str, reason: str) -> None:
    assert not retryable(code, reason)
    assert next_wait_ms(RetryPolicy(), attempt=1, code=code, reason=reason,
                        retry_after_ms=None, remaining_ms=10_000,
                        rng=random.Random(1)) is None


def test_backoff_is_jittered_under_a_growing_cap() -> None:
    policy = RetryPolicy(backoff_initial_ms=50, backoff_max_ms=400, backoff_multiplier=2)
    rng = random.Random(7)
    for attempt, cap in [(1, 50), (2, 100), (3, 200), (4, 400), (9, 400)]:
        waits = [backoff_ms(policy, attempt, rng) for _ in range(200)]
        assert 0 <= min(waits) and max(waits) <= cap
        assert max(waits) > cap * 0.8 and min(waits) < cap * 0.2, "not spread over [0, cap]"


def test_attempts_and_deadline_bound_the_loop() -> None:
    policy = RetryPolicy(attempts_max=3, backoff_initial_ms=100, backoff_max_ms=100)
    args = {"code": "UNAVAILABLE", "reason": "", "retry_after_ms": None,
            "rng": random.Random(3)}
    assert next_wait_ms(policy, attempt=2, remaining_ms=5000, **args) is not None
    assert next_wait_ms(policy, attempt=3, remaining_ms=5000, **args) is None
    # Not enough time left for a wait and an attempt after it.
    assert next_wait_ms(policy, attempt=1, remaining_ms=25, **args) is None


def test_server_retry_hint_is_honoured_within_the_deadline() -> None:
    rng = random.Random(5)
    wait = next_wait_ms(RetryPolicy(), attempt=1, code="RESOURCE_EXHAUSTED",
                        reason="RATE_LIMITED", retry_after_ms=300, remaining_ms=2000, rng=rng)
    assert wait is not None and wait >= 300
    assert next_wait_ms(RetryPolicy(), attempt=1, code="RESOURCE_EXHAUSTED",
                        reason="RATE_LIMITED", retry_after_ms=3000, remaining_ms=2000,
                        rng=rng) is None


@pytest.mark.parametrize("bad", [{"attempts_max": 0}, {"backoff_initial_ms": -1},
                                 {"backoff_initial_ms": 500, "backoff_max_ms": 100},
                                 {"backoff_multiplier": 0.5}])
def test_policy_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)  # type: ignore[arg-type]


def test_round_keys_are_deterministic_and_distinct() -> None:
    a, b = keys.RoundKeys("slots-eu", "r-1"), keys.RoundKeys("slots-eu", "r-1")
    assert a.bet() == b.bet() == "slots-eu:r-1:bet:0"
    assert len({a.bet(), a.bet(1), a.win(), a.rollback(), keys.RoundKeys("slots-eu", "r-2").bet()}) == 5


def test_long_keys_shrink_to_a_stable_digest_within_the_limit() -> None:
    long_round = "r" * 300
    key = keys.RoundKeys("slots", long_round).bet()
    assert len(key) <= keys.KEY_LENGTH_MAX and key.startswith("slots:sha256:")
    assert key == keys.RoundKeys("slots", long_round).bet()
    assert key != keys.RoundKeys("slots", long_round).win()


@pytest.mark.parametrize(("caller", "parts"), [("", ("r",)), ("  ", ("r",)), ("slots", ("",)),
                                               ("slots", ("r\n1",)), ("slots", ("ü",)),
                                               ("c" * 200, ("r",))])
def test_key_parts_must_be_usable(caller: str, parts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        keys.operation_key(caller, *parts)


def test_a_blocking_client_refused_its_arguments_leaves_no_thread_running() -> None:
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(ValueError):
        WalletClient("127.0.0.1:1", token="")
    assert "wallet-client" not in {t.name for t in threading.enumerate()} - before


def _status(code: int, reason: str, metadata: dict[str, str], retry_ms: int = 0) -> bytes:
    details = [any_pb2.Any()]
    details[0].Pack(error_details_pb2.ErrorInfo(reason=reason, domain="wallet.v1",
                                                metadata=metadata))
    if retry_ms:
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=retry_ms // 1000,
                                              nanos=retry_ms % 1000 * 1_000_000)))
        details.append(retry)
    return status_pb2.Status(code=code, message="m", details=details).SerializeToString()


def test_rich_status_becomes_the_reasons_exception_with_its_metadata() -> None:
    reason, metadata, retry_after = errors.parse_status(_status(
        9, "LIMIT_EXCEEDED", {"limit": "loss", "period": "day", "remaining_minor": "250"}))
    err = errors.error_for("FAILED_PRECONDITION", reason, "over the limit", metadata)
    assert isinstance(err, errors.LimitExceeded) and isinstance(err, errors.Rejected)
    assert err.remaining_minor == 250 and err.metadata["period"] == "day"
    assert retry_after is None

    reason, metadata, retry_after = errors.parse_status(_status(8, "RATE_LIMITED", {}, 1500))
    assert retry_after == 1500
    assert isinstance(errors.error_for("RESOURCE_EXHAUSTED", reason, "slow down"),
                      errors.RateLimited)


def test_unknown_reasons_fall_back_by_code_and_unknown_outcomes_stay_unknown() -> None:
    assert type(errors.error_for("FAILED_PRECONDITION", "NEW_RULE", "")) is errors.Rejected
    assert type(errors.error_for("UNAVAILABLE", "", "")) is errors.WalletUnavailable
    assert type(errors.error_for("INTERNAL", "", "")) is errors.WalletInternal
    err = errors.error_for("INVALID_ARGUMENT", "FIELD_INVALID", "amount: must be positive",
                           {"field": "amount"})
    assert isinstance(err, errors.InvalidRequest) and err.field == "amount"
    assert not errors.error_for("ALREADY_EXISTS", "IDEMPOTENCY_KEY_REUSED", "").replay


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def test_every_rpc_has_a_typed_method_in_both_clients() -> None:
    from wallet.v1 import wallet_service_pb2 as pb

    import wallet_client as wc

    rpcs = pb.DESCRIPTOR.services_by_name["WalletService"].methods_by_name
    for rpc in rpcs:
        for client in (wc.AsyncWalletClient, wc.WalletClient):
            assert callable(getattr(client, _snake(rpc), None)), \
                f"{client.__name__} has no method for {rpc}"
