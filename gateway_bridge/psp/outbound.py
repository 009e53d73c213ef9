"""Outbound HTTP to one PSP's REST API: timeouts, bounded retries, a circuit breaker.

Every adapter sends its calls through one `OutboundClient`. A call is one or more attempts:
each attempt has its own total timeout (`timeout_ms`); network errors, timeouts, 5xx and 429
are retried up to `retries_max` times with exponential backoff and jitter; any other 4xx is
a definitive answer (`PspDeclined`) and is never retried. POSTs carry the caller's
idempotency key, the same on every attempt, so a retry of a request whose answer was lost
returns the first result instead of creating a second payment.

The breaker counts calls, not attempts: `breaker_failures_max` consecutive calls that end in
`PspUnavailable` open it; while open, calls fail at once without touching the network; after
`breaker_cooldown_ms` one trial call goes through (half-open) and its outcome closes or
re-opens the breaker. A 4xx counts as success: the PSP is up and answering.

The aiohttp session is created lazily on the running loop (never at import) and closed by
`close()`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import aiohttp
import orjson

from gateway_bridge import metrics
from gateway_bridge.psp.base import (
    ChargeOrder,
    ProbeResult,
    PspConfig,
    PspDeclined,
    PspUnavailable,
    RefundOrder,
    RefundResult,
)

log = logging.getLogger(__name__)

# A PSP answer is a few KiB; anything past this is a broken or hostile peer, not data.
RESPONSE_SIZE_MAX_BYTES = 1024 * 1024
# Exponential backoff stops growing here, so retries_max bounds the whole call's duration.
RETRY_BACKOFF_MAX_MS = 10_000
# A 429's Retry-After is honoured up to this; a PSP asking for minutes gets the breaker.
RETRY_AFTER_MAX_MS = 10_000
# Connections kept per PSP; more only queue at the PSP's rate limiter.
CONNECTIONS_MAX = 32
# Error text from a PSP is echoed into our logs and errors: short, printable, no secrets.
ERROR_MESSAGE_MAX_CHARS = 200
ERROR_CODE_MAX_CHARS = 64
# Validation ranges for the PspConfig numbers this client uses.
TIMEOUT_MS_RANGE = (10, 120_000)
RETRIES_MAX_RANGE = (0, 10)
RETRY_BACKOFF_MS_RANGE = (1, 60_000)
BREAKER_FAILURES_MAX_RANGE = (1, 1000)
BREAKER_COOLDOWN_MS_RANGE = (1, 3_600_000)

BreakerState = Literal["closed", "open", "half_open"]
_API_KEY_PATTERN = re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]+")
_CODE_UNSAFE = re.compile(r"[^A-Za-z0-9_.:\-\[\] ]")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


class CircuitBreaker:
    """closed -> open after `failures_max` consecutive failures -> half_open after
    `cooldown_ms` (one trial call at a time) -> closed on a success, open again on failure."""

    def __init__(self, *, failures_max: int, cooldown_ms: int,
                 clock: Callable[[], float]) -> None:
        self._failures_max = failures_max
        self._cooldown_s = cooldown_ms / 1000
        self._clock = clock
        self._open = False
        self._opened_at_s = 0.0
        self._failures_consecutive = 0
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        if not self._open:
            return "closed"
        if self._clock() - self._opened_at_s >= self._cooldown_s:
            return "half_open"
        return "open"

    @property
    def failures_consecutive(self) -> int:
        return self._failures_consecutive

    def try_acquire(self) -> bool:
        """True if a call may go out now; in half-open, only the one trial call may."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._trial_in_flight:
            return False
        self._trial_in_flight = True
        return True

    def record_success(self) -> None:
        self._open = False
        self._failures_consecutive = 0
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self._failures_consecutive += 1
        trial_failed = self._trial_in_flight
        self._trial_in_flight = False
        if trial_failed or self._failures_consecutive >= self._failures_max:
            self._open = True
            self._opened_at_s = self._clock()

    def record_abandoned(self) -> None:
        """The call was cancelled before an outcome: neither health nor sickness was shown,
        but a half-open trial slot must be given back or the breaker would stay stuck."""
        self._trial_in_flight = False


@dataclass(frozen=True, slots=True)
class PspResponse:
    status: int
    body: bytes

    def json(self, psp: str, loads: Callable[[bytes], object] = orjson.loads) -> object:
        """The decoded body; an unreadable 2xx answer is PspUnavailable (retry is safe:
        the idempotency key returns the same object)."""
        try:
            return loads(self.body)
        except ValueError:
            raise PspUnavailable(psp, f"unreadable response (HTTP {self.status})") from None


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: str
    retryable: bool = True
    retry_after_ms: int = 0
    # The PSP has this request (same idempotency key) in hand or done: another call is
    # working on it. Whoever asked must wait for that outcome, not go elsewhere.
    in_progress: bool = False


class _TooLarge(Exception):
    pass


def _check_range(problems: list[str], name: str, value: int, bounds: tuple[int, int]) -> None:
    if not bounds[0] <= value <= bounds[1]:
        problems.append(f"{name}={value} is outside {bounds[0]}..{bounds[1]}")


def validate_config(config: PspConfig) -> None:
    """Fail at build time with every problem named, not at the first payment."""
    problems: list[str] = []
    if not config.base_url.startswith(("http://", "https://")):
        problems.append("base_url must start with http:// or https://")
    if not config.api_key:
        problems.append("api_key is empty")
    _check_range(problems, "timeout_ms", config.timeout_ms, TIMEOUT_MS_RANGE)
    _check_range(problems, "retries_max", config.retries_max, RETRIES_MAX_RANGE)
    _check_range(problems, "retry_backoff_ms", config.retry_backoff_ms, RETRY_BACKOFF_MS_RANGE)
    _check_range(problems, "breaker_failures_max", config.breaker_failures_max,
                 BREAKER_FAILURES_MAX_RANGE)
    _check_range(problems, "breaker_cooldown_ms", config.breaker_cooldown_ms,
                 BREAKER_COOLDOWN_MS_RANGE)
    if problems:
        raise ValueError(f"PSP {config.name!r} config: " + "; ".join(problems))


def sanitize(text: str, *, secret: str, chars_max: int) -> str:
    """PSP error text made safe for logs and callers: no API key, printable, bounded."""
    if secret:
        text = text.replace(secret, "[redacted]")
    text = _API_KEY_PATTERN.sub("[redacted]", text)
    text = _CONTROL_CHARS.sub(" ", text).strip()
    return text[:chars_max]


def _error_fields(body: bytes) -> tuple[str, str]:
    """(code, message) from Stripe {"error": {...}}, Adyen {"errorCode", "message"} or
    NOWPayments {"code", "message"} error bodies; empty strings when there is none."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    inner = data.get("error")
    fields = inner if isinstance(inner, dict) else data
    # Stripe's card errors say why in decline_code; their code is only "card_declined".
    code = next((str(fields[k]) for k in ("decline_code", "code", "errorCode", "type")
                 if fields.get(k)), "")
    message = fields.get("message") or fields.get("refusalReason") or ""
    return code, str(message)


class OutboundClient:
    """One PSP's REST client. `auth_headers` are sent on every request and never logged."""

    def __init__(self, config: PspConfig, *, auth_headers: Mapping[str, str],
                 idempotency_header: str = "Idempotency-Key",
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 jitter: Callable[[], float] = random.random) -> None:
        validate_config(config)
        self.psp = config.name
        self._config = config
        self._base_url = config.base_url.rstrip("/")
        self._headers = {"Accept": "application/json", "User-Agent": "gateway-bridge/0.1",
                         **auth_headers}
        self._idempotency_header = idempotency_header
        self._sleep = sleep
        self._jitter = jitter
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_ms / 1000)
        self._session: aiohttp.ClientSession | None = None
        self.breaker = CircuitBreaker(failures_max=config.breaker_failures_max,
                                      cooldown_ms=config.breaker_cooldown_ms, clock=clock)
        metrics.watch_breaker(self.psp, lambda: self.breaker.state == "open")

    @property
    def state(self) -> BreakerState:
        return self.breaker.state

    @property
    def available(self) -> bool:
        return self.breaker.state != "open"

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def request(self, method: str, path: str, *, body: bytes | None = None,
                      content_type: str = "", idempotency_key: str = "") -> PspResponse:
        """One call (with its retries). Returns a 2xx answer; raises PspDeclined for a 4xx
        other than 429 and PspUnavailable for everything else, or when the breaker is open."""
        if method == "POST" and not idempotency_key:
            raise ValueError("a POST to a PSP needs an idempotency key")  # caller's bug
        if not self.breaker.try_acquire():
            metrics.PSP_CALLS.labels(self.psp, "circuit_open").inc()
            raise PspUnavailable(self.psp, "circuit breaker open", breaker_open=True)
        started = time.perf_counter()
        try:
            response = await self._attempts(method, path, body=body, content_type=content_type,
                                            idempotency_key=idempotency_key)
        except PspDeclined:
            self.breaker.record_success()
            metrics.psp_call(self.psp, "declined", time.perf_counter() - started)
            raise
        except PspUnavailable:
            self.breaker.record_failure()
            metrics.psp_call(self.psp, "unavailable", time.perf_counter() - started)
            raise
        except BaseException:
            self.breaker.record_abandoned()
            raise
        self.breaker.record_success()
        metrics.psp_call(self.psp, "ok", time.perf_counter() - started)
        return response

    async def probe(self, path: str) -> ProbeResult:
        """One GET of `path`, outside the breaker and without retries (a health probe must
        see the PSP as it is). Any answer below 500 other than 401/403 means the API is up
        and takes our key; a 404 for a probe path is such an answer."""
        started = time.perf_counter()
        try:
            async with self._session_get().get(self._base_url + path, headers=self._headers,
                                               timeout=self._timeout,
                                               allow_redirects=False) as resp:
                await _read_bounded(resp)
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, _TooLarge) as exc:
            return ProbeResult(False, None, time.perf_counter() - started,
                               f"no answer ({type(exc).__name__})")
        up = status < 500 and status not in (401, 403)
        reason = "ok" if up else ("credentials refused" if status in (401, 403)
                                  else f"HTTP {status}")
        return ProbeResult(up, status, time.perf_counter() - started, reason)

    async def _attempts(self, method: str, path: str, *, body: bytes | None,
                        content_type: str, idempotency_key: str) -> PspResponse:
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = content_type
        if idempotency_key:
            headers[self._idempotency_header] = idempotency_key
        attempts_max = self._config.retries_max + 1
        for attempt in range(1, attempts_max + 1):
            outcome = await self._attempt(method, path, body, headers)
            if isinstance(outcome, PspResponse):
                return outcome
            if not outcome.retryable or attempt == attempts_max:
                raise PspUnavailable(self.psp, f"{method} {path}: {outcome.reason} "
                                               f"(attempt {attempt} of {attempts_max})",
                                     in_progress=outcome.in_progress)
            delay_ms = self._backoff_ms(attempt, outcome.retry_after_ms)
            log.warning("psp call failed; retrying", extra={
                "psp": self.psp, "method": method, "path": path, "attempt": attempt,
                "reason": outcome.reason, "backoff_ms": delay_ms})
            await self._sleep(delay_ms / 1000)
        raise AssertionError("unreachable: the loop returns or raises")

    def _backoff_ms(self, attempt: int, retry_after_ms: int) -> int:
        """Exponential with "equal jitter": half fixed, half random, so synchronized clients
        spread out while each still waits at least half the nominal delay."""
        nominal_ms = min(self._config.retry_backoff_ms * 2 ** (attempt - 1), RETRY_BACKOFF_MAX_MS)
        delay_ms = int(nominal_ms / 2 + self._jitter() * nominal_ms / 2)
        return max(delay_ms, min(retry_after_ms, RETRY_AFTER_MAX_MS))

    def _session_get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=CONNECTIONS_MAX),
                timeout=self._timeout, raise_for_status=False)
        return self._session

    async def _attempt(self, method: str, path: str, body: bytes | None,
                       headers: Mapping[str, str]) -> PspResponse | _Failure:
        session = self._session_get()
        try:
            async with session.request(method, self._base_url + path, data=body,
                                       headers=headers, timeout=self._timeout,
                                       allow_redirects=False) as resp:
                raw = await _read_bounded(resp)
                status = resp.status
                retry_after = resp.headers.get("Retry-After", "")
        except TimeoutError:
            return _Failure(f"no answer within {self._config.timeout_ms} ms")
        except aiohttp.ClientError as exc:
            return _Failure(f"network error ({type(exc).__name__})")
        except _TooLarge:
            return _Failure(f"response larger than {RESPONSE_SIZE_MAX_BYTES} bytes",
                            retryable=False)
        return self._classify(status, raw, retry_after)

    def _classify(self, status: int, raw: bytes, retry_after: str) -> PspResponse | _Failure:
        if 200 <= status < 300:
            return PspResponse(status, raw)
        if status == 409:
            return _Failure("HTTP 409 (the same request is in progress)", in_progress=True,
                            retry_after_ms=_retry_after_ms(retry_after))
        if status in _RETRYABLE_4XX or status >= 500:
            return _Failure(f"HTTP {status}", retry_after_ms=_retry_after_ms(retry_after))
        code, message = _error_fields(raw)
        if _outcome_unknown(code):
            return _Failure(f"HTTP {status} ({code or 'idempotency'})", retryable=False,
                            in_progress=True)
        if status in _DECLINE_STATUSES and not _outcome_unknown(code):
            raise PspDeclined(
                self.psp, sanitize(message or f"HTTP {status}", secret=self._config.api_key,
                                   chars_max=ERROR_MESSAGE_MAX_CHARS),
                status=status,
                code=_CODE_UNSAFE.sub("", sanitize(code, secret=self._config.api_key,
                                                   chars_max=ERROR_CODE_MAX_CHARS)))
        # 401/403 (our credentials), 404, an idempotency error, anything else: the PSP did
        # not refuse the payment itself, so the outcome stays unknown. Treating these as a
        # decline would release a withdrawal's reserve while a payout may still go ahead.
        return _Failure(f"HTTP {status}", retryable=False)


# Answers that mean "not now": 408 timeout, 409 the same idempotency key still in flight,
# 425 too early, 429 rate limited. Retried with the same key, like 5xx.
_RETRYABLE_4XX = frozenset({408, 409, 425, 429})
# Answers that refuse the request itself (bad parameters, payment declined, unprocessable):
# the only 4xx that count as a definitive decline.
_DECLINE_STATUSES = frozenset({400, 402, 422})


# Error codes that say "this key is busy or was used differently", not "refused": Stripe's
# idempotency_error, Adyen's 704 (request already processed or in progress), ours.
_UNKNOWN_OUTCOME_CODES = frozenset({"704"})


def _outcome_unknown(code: str) -> bool:
    return "idempotency" in code.lower() or code in _UNKNOWN_OUTCOME_CODES


class ClientAdapter:
    """What every adapter has: its name and config, its own outbound client, and the
    breaker-derived availability and shutdown the PspAdapter interface asks for."""

    # A cheap authenticated GET whose answer says the API is there (see OutboundClient.probe).
    probe_path = "/"
    needs_pay_currency = False
    supports_charges = False

    def __init__(self, config: PspConfig, *, auth_headers: Mapping[str, str],
                 clock: Callable[[], float]) -> None:
        self.name = config.name
        self._config = config
        self.client = OutboundClient(config, auth_headers=auth_headers, clock=clock)

    @property
    def available(self) -> bool:
        return self.client.available

    async def probe(self) -> ProbeResult:
        return await self.client.probe(self.probe_path)

    async def close(self) -> None:
        await self.client.close()

    async def charge(self, order: ChargeOrder) -> str:
        """PSPs without card payments (crypto): routing never sends a charge here."""
        del order
        raise PspDeclined(self.name, "no server-to-server card payments at this PSP",
                          status=0, code="not_supported")

    async def refund(self, order: RefundOrder) -> RefundResult:
        del order
        raise PspDeclined(self.name, "refunds are not available through this PSP's API; "
                          "refund by hand", status=0, code="not_supported")


def _retry_after_ms(value: str) -> int:
    """Retry-After in seconds (the HTTP-date form is ignored: PSPs send seconds)."""
    try:
        return max(0, int(value.strip())) * 1000
    except ValueError:
        return 0


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    declared = resp.content_length
    if declared is not None and declared > RESPONSE_SIZE_MAX_BYTES:
        raise _TooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > RESPONSE_SIZE_MAX_BYTES:
            raise _TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)
