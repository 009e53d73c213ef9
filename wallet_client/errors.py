"""Errors of wallet calls, one exception class per stable ErrorInfo reason (README, "Errors").

    WalletError                 base: `code` (gRPC status name), `reason`, `message`, `metadata`
    ├── WalletUnavailable       try again later with the SAME idempotency key, never a new
    │   │                       one: the call may or may not have happened
    │   ├── WalletInternal      the wallet failed (INTERNAL); not retried by the client
    │   └── RateLimited         nothing done; `retry_after_ms` says when to try again
    └── Refused                 the wallet answered; a retry with the same key gets the same
        ├── InvalidRequest      answer, so the client never retries these
        ├── NotFound
        ├── Rejected            a business rule refused; recorded under the key
        ├── KeyReused / DuplicatePspReference
        └── Unauthenticated / PermissionDenied

The parsing reads the rich status gRPC carries in the trailing metadata
(`grpc-status-details-bin`, a google.rpc.Status), so it needs no more than protobuf and the
google.rpc types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

import grpc
from google.rpc import error_details_pb2, status_pb2

DETAILS_METADATA_KEY = "grpc-status-details-bin"
ERROR_DOMAIN = "wallet.v1"


class WalletError(Exception):
    """A wallet call that did not succeed. `metadata` is ErrorInfo's (e.g. "field",
    "limit", "remaining_minor", "until"); `retry_after_ms` comes from RetryInfo."""

    def __init__(self, code: str, reason: str, message: str,
                 metadata: Mapping[str, str] | None = None, *,
                 retry_after_ms: int | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}" if reason != code else
                         f"{code}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))
        self.retry_after_ms = retry_after_ms

    @property
    def field(self) -> str | None:
        """The request field a refusal names, if any."""
        return self.metadata.get("field")

    @property
    def replay(self) -> bool:
        """A recorded refusal repeated for a retry with the same key."""
        return self.metadata.get("replay") == "true"


class WalletUnavailable(WalletError):
    """No definitive answer within the retries and the deadline: the operation may or may
    not have been recorded. Retry later with the same key; the wallet then returns the
    recorded outcome or runs it once."""


class WalletInternal(WalletUnavailable):
    """The wallet failed (INTERNAL, UNKNOWN): a bug, reported with a request id in the
    message. Not retried by the client; the outcome is unknown as for WalletUnavailable."""


class Refused(WalletError):
    """A definitive answer: a retry with the same key gets the same one."""


class InvalidRequest(Refused):
    """A request field is missing or malformed (`field` names it); nothing was done."""


class NotFound(Refused):
    pass


class WalletNotFound(NotFound):
    pass


class WithdrawalNotFound(NotFound):
    pass


class BonusNotFound(NotFound):
    pass


class TransactionNotFound(NotFound):
    pass


class Rejected(Refused):
    """A business rule refused the operation; recorded under the idempotency key."""


class InsufficientFunds(Rejected):
    pass


class WalletBlocked(Rejected):
    pass


class AlreadyRolledBack(Rejected):
    pass


class WithdrawalAlreadyFinal(Rejected):
    pass


class WithdrawalNotCommitted(Rejected):
    pass


class BonusNotActive(Rejected):
    pass


class NoActiveBonus(Rejected):
    pass


class BalanceLimitExceeded(Rejected):
    pass


class LimitExceeded(Rejected):
    """A responsible-gambling limit: `metadata` has "limit", "period", "limit_minor" and
    "remaining_minor"."""

    @property
    def remaining_minor(self) -> int | None:
        value = self.metadata.get("remaining_minor")
        return int(value) if value is not None else None


class PlayerOnBreak(Rejected):
    """SELF_EXCLUDED or TIMED_OUT; `metadata["until"]` is a time or "permanent"."""


class PlayerRestricted(Rejected):
    """UNDERAGE or COUNTRY_BLOCKED; `metadata["until"]` is a time or "lifted"."""


class BatchRolledBack(Rejected):
    pass


class KeyReused(Refused):
    """The idempotency key was used before for a different request; nothing was done."""


class DuplicatePspReference(Refused):
    pass


class Unauthenticated(Refused):
    pass


class PermissionDenied(Refused):
    pass


class RateLimited(WalletUnavailable):
    """The caller's rate limit, or the server's cap on calls in flight; nothing was done.
    The client retries these itself while the deadline allows."""


class MessageTooLarge(InvalidRequest):
    pass


BY_REASON: Mapping[str, type[WalletError]] = MappingProxyType({
    "FIELD_REQUIRED": InvalidRequest, "FIELD_INVALID": InvalidRequest,
    "UNKNOWN_CURRENCY": InvalidRequest, "AMOUNT_NOT_POSITIVE": InvalidRequest,
    "AMOUNT_ABOVE_MAXIMUM": InvalidRequest, "MESSAGE_TOO_LARGE": MessageTooLarge,
    "WALLET_NOT_FOUND": WalletNotFound, "WITHDRAWAL_NOT_FOUND": WithdrawalNotFound,
    "BONUS_NOT_FOUND": BonusNotFound, "TRANSACTION_NOT_FOUND": TransactionNotFound,
    "INSUFFICIENT_FUNDS": InsufficientFunds, "WALLET_BLOCKED": WalletBlocked,
    "ALREADY_ROLLED_BACK": AlreadyRolledBack,
    "WITHDRAWAL_ALREADY_FINAL": WithdrawalAlreadyFinal,
    "WITHDRAWAL_NOT_COMMITTED": WithdrawalNotCommitted,
    "BONUS_NOT_ACTIVE": BonusNotActive, "NO_ACTIVE_BONUS": NoActiveBonus,
    "BALANCE_LIMIT_EXCEEDED": BalanceLimitExceeded, "LIMIT_EXCEEDED": LimitExceeded,
    "SELF_EXCLUDED": PlayerOnBreak, "TIMED_OUT": PlayerOnBreak,
    "UNDERAGE": PlayerRestricted, "COUNTRY_BLOCKED": PlayerRestricted,
    "BATCH_ROLLED_BACK": BatchRolledBack,
    "IDEMPOTENCY_KEY_REUSED": KeyReused, "DUPLICATE_PSP_REFERENCE": DuplicatePspReference,
    "TOKEN_MISSING": Unauthenticated, "TOKEN_UNKNOWN": Unauthenticated,
    "SCOPE_NOT_ALLOWED": PermissionDenied, "SCOPE_MISSING": PermissionDenied,
    "RATE_LIMITED": RateLimited,
})

# A reason this client does not know yet still lands in the right family by its code.
BY_CODE: Mapping[str, type[WalletError]] = MappingProxyType({
    "INVALID_ARGUMENT": InvalidRequest, "OUT_OF_RANGE": InvalidRequest,
    "NOT_FOUND": NotFound, "FAILED_PRECONDITION": Rejected, "ALREADY_EXISTS": Refused,
    "UNAUTHENTICATED": Unauthenticated, "PERMISSION_DENIED": PermissionDenied,
    "RESOURCE_EXHAUSTED": RateLimited, "INTERNAL": WalletInternal,
    "UNKNOWN": WalletInternal, "DATA_LOSS": WalletInternal, "UNIMPLEMENTED": Refused,
})


def error_for(code: str, reason: str, message: str, metadata: Mapping[str, str] | None = None,
              *, retry_after_ms: int | None = None) -> WalletError:
    """The exception for an answer: by reason first, then by status code; anything else
    (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, CANCELLED) leaves the outcome unknown."""
    cls = BY_REASON.get(reason) or BY_CODE.get(code) or WalletUnavailable
    return cls(code, reason or code, message, metadata, retry_after_ms=retry_after_ms)


def parse_status(details: bytes) -> tuple[str, dict[str, str], int | None]:
    """(reason, metadata, retry_after_ms) from a serialized google.rpc.Status; reason ""
    when it holds no ErrorInfo of the wallet."""
    status = status_pb2.Status.FromString(details)
    reason, metadata, retry_after_ms = "", {}, None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        retry = error_details_pb2.RetryInfo()
        if detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(retry.DESCRIPTOR) and detail.Unpack(retry):
            delay = retry.retry_delay
            retry_after_ms = delay.seconds * 1000 + delay.nanos // 1_000_000
    return reason, metadata, retry_after_ms


def from_rpc_error(err: grpc.aio.AioRpcError) -> WalletError:
    code = err.code().name
    message = err.details() or ""
    reason, metadata, retry_after_ms = "", dict[str, str](), None
    # grpc.aio yields (key, value) tuples; its stubs type them otherwise.
    metadata_in = err.trailing_metadata() or ()
    pairs: Iterable[tuple[str, str | bytes]] = metadata_in  # type: ignore[assignment]
    for key, value in pairs:
        if key == DETAILS_METADATA_KEY and isinstance(value, bytes):
            reason, metadata, retry_after_ms = parse_status(value)
    if retry_after_ms is None and "retry_after_ms" in metadata:
        retry_after_ms = int(metadata["retry_after_ms"])
    return error_for(code, reason, message, metadata, retry_after_ms=retry_after_ms)
