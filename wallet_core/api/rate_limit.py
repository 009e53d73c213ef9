"""Per-caller request rate limit: one token bucket per configured calling service.

A call spends one token (an ExecuteBatch is one call: its size is bounded by
WALLET_BATCH_OPERATIONS_MAX and the message size instead). Tokens come back at `rate_rps`
up to `burst`. A call that finds the bucket empty is refused before it does anything, with
RESOURCE_EXHAUSTED, reason RATE_LIMITED and a retry hint (google.rpc.RetryInfo plus
`metadata["retry_after_ms"]`), so nothing was recorded and a retry with the same key is safe.

The buckets are created once from the configured callers, so their number is bounded by
WALLET_CALLERS: a flood of unknown tokens is refused by authentication and creates nothing.
Everything runs on the event loop thread, so no lock is needed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from wallet_core.api.errors import rich_status

RATE_LIMITED = "RATE_LIMITED"
# A hint shorter than this is rounded up: clients sleeping 0 ms would just spin.
RETRY_AFTER_MS_MIN = 1
# Refill sums differences of clock readings, whose float noise (0.99999999997 for one token)
# must not refuse a call that is due.
_TOKEN_EPSILON = 1e-9


@dataclass(slots=True)
class _Bucket:
    tokens: float
    refilled_s: float


class RateLimiter:
    """Token buckets for a fixed set of callers; `rate_rps` 0 turns the limit off."""

    def __init__(self, *, rate_rps: int, burst: int, callers: Iterable[str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_rps < 0 or burst < 0:
            raise ValueError("rate_rps and burst must be >= 0")
        self.rate_rps = rate_rps
        # Burst 0 means one second's worth of calls, at least one call.
        self.burst = burst or max(rate_rps, 1)
        self._clock = clock
        now = clock()
        self._buckets = ({name: _Bucket(float(self.burst), now) for name in callers}
                         if rate_rps else {})

    @property
    def enabled(self) -> bool:
        return self.rate_rps > 0

    def retry_after_ms(self, caller: str) -> int:
        """Spend a token of `caller`: 0 when the call may go on, else ms until a token."""
        bucket = self._buckets.get(caller)
        if bucket is None:  # limit off (authentication only lets configured callers in)
            return 0
        now = self._clock()
        elapsed_s = max(now - bucket.refilled_s, 0.0)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed_s * self.rate_rps)
        bucket.refilled_s = now
        if bucket.tokens >= 1.0 - _TOKEN_EPSILON:
            bucket.tokens = max(bucket.tokens - 1.0, 0.0)
            return 0
        wait_ms = (1.0 - bucket.tokens) * 1000 / self.rate_rps
        # Rounded up to whole ms; the inner round drops float noise (50.000000001 -> 50).
        return max(math.ceil(round(wait_ms, 6)), RETRY_AFTER_MS_MIN)


def rate_limited_status(caller: str, retry_after_ms: int) -> status_pb2.Status:
    """RESOURCE_EXHAUSTED with ErrorInfo (reason RATE_LIMITED) and RetryInfo."""
    message = (f"service {caller} is over its request rate limit; nothing was done: retry "
               f"after {retry_after_ms} ms with the same idempotency key")
    status = rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, message, RATE_LIMITED,
                         {"retry_after_ms": str(retry_after_ms)})
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(retry_after_ms)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status.details.append(detail)
    return status
