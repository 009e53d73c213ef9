"""When a failed call is tried again, and how long to wait first: pure, no I/O.

Safe by construction: the client resends the very same request, so the same idempotency
key, and the wallet answers a repeat with the recorded outcome. Only answers that leave
the outcome unknown or did nothing are retried:

    UNAVAILABLE, DEADLINE_EXCEEDED (of one attempt), ABORTED, CANCELLED (by the server,
    e.g. while it shuts down), RESOURCE_EXHAUSTED except MESSAGE_TOO_LARGE

Refusals (INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS, ...) are
answers, not failures: never retried. Attempts are bounded, the waits grow exponentially
with full jitter (so many clients that failed together do not come back together), and no
attempt starts or waits past the caller's overall deadline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

RETRYABLE_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "CANCELLED",
                             "RESOURCE_EXHAUSTED"})
# A request too large stays too large.
NOT_RETRYABLE_REASONS = frozenset({"MESSAGE_TOO_LARGE"})
# An attempt given less than this can only time out.
ATTEMPT_TIME_MIN_MS = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Bounds of the retry loop. The defaults suit a game server's Bet: a wallet restart or
    failover (about a second) is ridden out within a 5 s deadline."""

    attempts_max: int = 5
    backoff_initial_ms: int = 50
    backoff_max_ms: int = 1000
    backoff_multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts_max < 1:
            raise ValueError("attempts_max must be at least 1")
        if not 0 <= self.backoff_initial_ms <= self.backoff_max_ms:
            raise ValueError("need 0 <= backoff_initial_ms <= backoff_max_ms")
        if self.backoff_multiplier < 1:
            raise ValueError("backoff_multiplier must be at least 1")


NO_RETRIES = RetryPolicy(attempts_max=1)


def retryable(code: str, reason: str) -> bool:
    return code in RETRYABLE_CODES and reason not in NOT_RETRYABLE_REASONS


def backoff_ms(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """The wait after failed attempt number `attempt` (1-based): uniform in [0, cap], the
    cap growing from backoff_initial_ms to backoff_max_ms."""
    cap = min(policy.backoff_max_ms,
              policy.backoff_initial_ms * policy.backoff_multiplier ** (attempt - 1))
    return rng.uniform(0, cap)


def next_wait_ms(policy: RetryPolicy, *, attempt: int, code: str, reason: str,
                 retry_after_ms: int | None, remaining_ms: float,
                 rng: random.Random) -> float | None:
    """How long to wait before the next attempt, or None to give up now: not retryable,
    attempts spent, or the wait (at least the server's retry hint) would use up what is
    left of the deadline."""
    if not retryable(code, reason) or attempt >= policy.attempts_max:
        return None
    wait = backoff_ms(policy, attempt, rng)
    if retry_after_ms is not None:
        wait = max(wait, float(retry_after_ms))
    # An attempt needs some time of its own after the wait, or it can only time out.
    if wait >= remaining_ms - ATTEMPT_TIME_MIN_MS:
        return None
    return wait
