"""A Locust `User` that drives the wallet over gRPC, following Locust's documented pattern.

grpc.aio cannot run inside Locust (docs/ARCHITECTURE.md, "Rules the numbers set"), so each
user holds a *sync* `grpc.insecure_channel`, made cooperative by
`grpc.experimental.gevent.init_gevent()`, and every call goes through `LocustInterceptor`,
which fires `environment.events.request` with request_type "grpc", the method's short name
and the response time in ms.

What counts as a failure is decided here, once, for every scenario:
- OK is a success.
- A business rejection the scenario said it expects (an `ErrorInfo.reason` such as
  INSUFFICIENT_FUNDS passed in `expect=`) is a *success with a tag*: it is reported under
  `"<Method> [<REASON>]"`, so the stats show how often it happened without counting it as a
  failure. A wallet that answers "no" correctly and fast is doing its job.
- Everything else is a failure: UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
  UNIMPLEMENTED, auth errors, and rejections the scenario did not expect.
Scenario-level correctness checks (a replay that differs from the first answer) are fired
as request_type "check" by `thresholds.fire_check`; the thresholds require zero of them.

Configuration (read when each user starts, never at import):
- target: `--host grpc://127.0.0.1:50051` or `WALLET_TARGET` (default 127.0.0.1:50051);
- tokens: `WALLET_CALLERS` (JSON text) or `WALLET_CALLERS_FILE`, the wallet's own callers
  format `{"svc": {"token": ..., "scopes": [...]}}`; each call picks a caller holding the
  scope it needs;
- `LOADTEST_CALL_TIMEOUT_MS` (default 5000): the deadline of every call;
- `LOADTEST_RUN_ID`: prefix of player ids and keys (default: random per process), so that
  each run starts from fresh wallets and never collides with an earlier run's keys.
"""

from __future__ import annotations

import bisect
import contextvars
import itertools
import json
import os
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from locust import User
from locust.env import Environment
from locust.exception import LocustError
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

# Must run before any channel exists: it swaps grpc's completion-queue polling for gevent's,
# so one blocked call yields to the other users instead of freezing the whole process.
grpc_gevent.init_gevent()

TARGET_DEFAULT = "127.0.0.1:50051"
# Deadline of every call. Generous: on 2 shared cores a saturated wallet queues; a call that
# takes longer than this is a failure (DEADLINE_EXCEEDED), not a slow success.
CALL_TIMEOUT_MS_DEFAULT = 5000
# A load generator must not run away with memory: messages above this are a bug, not load.
MESSAGE_SIZE_MAX_BYTES = 4 * 1024 * 1024
# Caps how much of a failure message goes into Locust's error table (one row per distinct
# text, so it must also not embed ids that differ per call).
ERROR_TEXT_MAX_CHARS = 200

_PROCESS_RUN_ID = uuid.uuid4().hex[:8]
_key_counter = itertools.count()
# Reasons the current call expects; set around one call by GrpcUser.call. A ContextVar,
# because users are greenlets and greenlets each have their own context.
_expected_reasons: contextvars.ContextVar[Collection[str]] = contextvars.ContextVar(
    "expected_reasons", default=())


def run_id() -> str:
    """Prefix of this run's player ids and idempotency keys."""
    return os.environ.get("LOADTEST_RUN_ID") or _PROCESS_RUN_ID


def new_key(prefix: str) -> str:
    """A process-unique idempotency key (well under the wallet's 128 characters)."""
    return f"{prefix}-{run_id()}-{uuid.uuid4().hex[:12]}-{next(_key_counter)}"


def env_int(name: str, default: int, *, low: int, high: int) -> int:
    """An integer setting from the environment, validated against its bounds."""
    raw = os.environ.get(name, "")
    value = int(raw) if raw.strip() else default
    if not low <= value <= high:
        raise LocustError(f"{name}={value} is outside [{low}, {high}]")
    return value


def env_float(name: str, default: float, *, low: float, high: float) -> float:
    """A decimal setting from the environment, validated against its bounds."""
    raw = os.environ.get(name, "")
    value = float(raw) if raw.strip() else default
    if not low <= value <= high:
        raise LocustError(f"{name}={value} is outside [{low}, {high}]")
    return value


class WalletCallFailed(Exception):
    """A call the scenario did not expect to fail; its text is what Locust's error table
    groups by, so it holds the code and reason but no per-call ids."""

    def __init__(self, code: grpc.StatusCode, reason: str, details: str) -> None:
        if code == grpc.StatusCode.INTERNAL:
            # Its text carries a request id per call; the wallet's log has the rest.
            details = "internal error (see the wallet's log)"
        super().__init__(f"{code.name} {reason}: {details[:ERROR_TEXT_MAX_CHARS]}".strip())
        self.code = code
        self.reason = reason


def error_reason(error: grpc.RpcError) -> tuple[str, dict[str, str]]:
    """The `ErrorInfo.reason` and metadata of a failed call ("" and {} when it has none,
    e.g. UNAVAILABLE raised by the client library itself)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return "", {}
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason, dict(info.metadata)
    return "", {}


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Fires one Locust request event per unary call (see the module docstring for what
    counts as a failure)."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment

    def intercept_unary_unary(self, continuation: Callable[..., Any],
                              client_call_details: grpc.ClientCallDetails,
                              request: Any) -> Any:
        method = client_call_details.method.rsplit("/", 1)[-1]
        started = time.perf_counter()
        # The sync stack returns only once the call is complete: a response or an error.
        outcome = continuation(client_call_details, request)
        elapsed_ms = (time.perf_counter() - started) * 1000
        error = outcome.exception()
        name, exception, length = method, None, 0
        if error is None:
            length = outcome.result().ByteSize()
        else:
            reason, _ = error_reason(error)
            if reason and reason in _expected_reasons.get():
                name = f"{method} [{reason}]"
            else:
                exception = WalletCallFailed(error.code(), reason, error.details() or "")
        self.environment.events.request.fire(
            request_type="grpc", name=name, response_time=elapsed_ms,
            response_length=length, exception=exception, context={})
        return outcome


def load_tokens() -> dict[str, str]:
    """scope -> bearer token, from WALLET_CALLERS or WALLET_CALLERS_FILE."""
    text = os.environ.get("WALLET_CALLERS", "")
    path = os.environ.get("WALLET_CALLERS_FILE", "")
    if not text and path:
        text = Path(path).read_text()
    if not text:
        raise LocustError("no wallet tokens: set WALLET_CALLERS_FILE (e.g. .run/callers.json, "
                          "written by `make run`) or WALLET_CALLERS")
    tokens: dict[str, str] = {}
    # Sorted so every process picks the same caller for a scope several callers hold.
    for _name, caller in sorted(json.loads(text).items()):
        for scope in caller["scopes"]:
            tokens.setdefault(scope, caller["token"])
    return tokens


def target_from(host: str | None) -> str:
    """host:port from `--host` (grpc://host:port or host:port) or WALLET_TARGET."""
    target = host or os.environ.get("WALLET_TARGET") or TARGET_DEFAULT
    return target.removeprefix("grpc://").rstrip("/")


def weighted_choice(uniform: float, choices: Sequence[tuple[str, float]]) -> str:
    """The name whose band of the cumulative shares holds `uniform` (in [0, 1))."""
    point = uniform * sum(share for _, share in choices)
    for name, share in choices:
        if point < share:
            return name
        point -= share
    return choices[-1][0]


class ZipfPicker:
    """Picks indexes 0..size-1 with probability proportional to 1/(i+1)^exponent: a few hot
    players and a long tail, as real traffic has. The population is bounded by `size`."""

    def __init__(self, size: int, exponent: float) -> None:
        if size < 1 or exponent < 0:
            raise LocustError(f"Zipf needs size >= 1 and exponent >= 0, got {size}, {exponent}")
        weights = [1 / (rank ** exponent) for rank in range(1, size + 1)]
        self._cumulative = list(itertools.accumulate(weights))

    def pick(self, uniform: float) -> int:
        """`uniform` in [0, 1) -> an index; passing it in keeps the picker deterministic."""
        return bisect.bisect_right(self._cumulative, uniform * self._cumulative[-1])


class GrpcUser(User):
    """Base of the gRPC scenarios: a channel per user, the interceptor, tokens per scope."""

    abstract = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.tokens = load_tokens()
        self.timeout_s = env_int("LOADTEST_CALL_TIMEOUT_MS", CALL_TIMEOUT_MS_DEFAULT,
                                 low=10, high=60_000) / 1000
        options = [("grpc.max_receive_message_length", MESSAGE_SIZE_MAX_BYTES),
                   ("grpc.max_send_message_length", MESSAGE_SIZE_MAX_BYTES)]
        self._channel = grpc.insecure_channel(target_from(self.host), options=options)
        intercepted = grpc.intercept_channel(self._channel, LocustInterceptor(environment))
        self.stub = pb_grpc.WalletServiceStub(intercepted)

    def on_stop(self) -> None:
        self._channel.close()

    def metadata(self, scope: str) -> list[tuple[str, str]]:
        token = self.tokens.get(scope)
        if token is None:
            raise LocustError(f"no caller with scope {scope!r} in the callers file")
        return [("authorization", f"Bearer {token}")]

    def call_raw(self, method: str, request: Any, *, scope: str,
                 expect: Collection[str] = ()) -> Any:
        """Calls `method`; raises grpc.RpcError (already reported to Locust) on any error."""
        reset = _expected_reasons.set(expect)
        try:
            return getattr(self.stub, method)(request, metadata=self.metadata(scope),
                                              timeout=self.timeout_s)
        finally:
            _expected_reasons.reset(reset)

    def call(self, method: str, request: Any, *, scope: str,
             expect: Collection[str] = ()) -> Any | None:
        """Calls `method`; None on any error, which the interceptor has already reported."""
        try:
            return self.call_raw(method, request, scope=scope, expect=expect)
        except grpc.RpcError:
            return None


class FundedPlayers:
    """Players whose wallets this process has opened and funded once (per run), shared by
    every user of the process. Funding uses fixed keys per player, so two users funding the
    same player at once execute it once: the second is a replay."""

    def __init__(self, *, amount_minor: int, currency: str = "USD") -> None:
        self.amount_minor = amount_minor
        self.currency = currency
        self._funded: set[str] = set()

    def ensure(self, user: GrpcUser, player_id: str) -> bool:
        """Opens and funds `player_id` unless done already; False when a call failed."""
        if player_id in self._funded:
            return True
        opened = user.call("OpenWallet", pb.OpenWalletRequest(
            player_id=player_id, currency=self.currency,
            idempotency_key=f"lt-open-{player_id}"), scope="payments")
        if opened is None or not self.top_up(user, player_id, key=f"lt-fund-{player_id}"):
            return False
        self._funded.add(player_id)
        return True

    def top_up(self, user: GrpcUser, player_id: str, *, key: str | None = None) -> bool:
        """One deposit of `amount_minor` (a fresh key unless given)."""
        key = key or new_key("lt-topup")
        return user.call("Deposit", pb.DepositRequest(
            player_id=player_id, currency=self.currency, amount=self.amount_minor,
            psp="loadtest", psp_reference=key, idempotency_key=key),
            scope="payments") is not None
