"""Domain errors of the wallet, each with a stable `reason` string clients branch on.

    WalletError                      base; never raised itself
    ├── InvalidField                 a request field is missing or malformed (names the field)
    ├── NotFound                     wallet / withdrawal / bonus / transaction does not exist
    ├── Rejected                     a business rule refuses the operation; recorded in the
    │                                journal so a retry replays the same rejection
    ├── Conflict                     the request collides with existing state (key reuse, ...)
    └── Unavailable                  a dependency failed; nothing recorded, safe to retry

The mapping to gRPC status codes lives at the edge (wallet_core.api.errors), in one table.
Broken invariants are not WalletErrors: they raise AssertionError/RuntimeError and surface
as INTERNAL with a request id.
"""

from __future__ import annotations

from collections.abc import Mapping


class WalletError(Exception):
    reason: str = "WALLET_ERROR"

    def __init__(self, message: str, *, reason: str | None = None,
                 metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidField(WalletError):
    reason = "FIELD_INVALID"

    def __init__(self, field: str, problem: str, *, reason: str | None = None) -> None:
        super().__init__(f"{field}: {problem}", reason=reason, metadata={"field": field})
        self.field = field


class NotFound(WalletError):
    reason = "NOT_FOUND"


class Rejected(WalletError):
    """A business rejection: recorded with the idempotency key and replayed as is."""


class Conflict(WalletError):
    reason = "CONFLICT"


class Unavailable(WalletError):
    reason = "UNAVAILABLE"


# Stable reasons (documented in README "Errors").
INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
WALLET_BLOCKED = "WALLET_BLOCKED"
ALREADY_ROLLED_BACK = "ALREADY_ROLLED_BACK"
BALANCE_LIMIT_EXCEEDED = "BALANCE_LIMIT_EXCEEDED"
WITHDRAWAL_ALREADY_FINAL = "WITHDRAWAL_ALREADY_FINAL"
BATCH_ROLLED_BACK = "BATCH_ROLLED_BACK"
SCOPE_MISSING = "SCOPE_MISSING"
WITHDRAWAL_NOT_COMMITTED = "WITHDRAWAL_NOT_COMMITTED"
BONUS_NOT_ACTIVE = "BONUS_NOT_ACTIVE"
NO_ACTIVE_BONUS = "NO_ACTIVE_BONUS"
IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
DUPLICATE_PSP_REFERENCE = "DUPLICATE_PSP_REFERENCE"
WALLET_NOT_FOUND = "WALLET_NOT_FOUND"
WITHDRAWAL_NOT_FOUND = "WITHDRAWAL_NOT_FOUND"
BONUS_NOT_FOUND = "BONUS_NOT_FOUND"
TRANSACTION_NOT_FOUND = "TRANSACTION_NOT_FOUND"
FIELD_REQUIRED = "FIELD_REQUIRED"
FIELD_INVALID = "FIELD_INVALID"
UNKNOWN_CURRENCY = "UNKNOWN_CURRENCY"
AMOUNT_NOT_POSITIVE = "AMOUNT_NOT_POSITIVE"
AMOUNT_ABOVE_MAXIMUM = "AMOUNT_ABOVE_MAXIMUM"
DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
DEADLOCK_RETRIES_EXHAUSTED = "DEADLOCK_RETRIES_EXHAUSTED"


def rejected(reason: str, message: str) -> Rejected:
    return Rejected(message, reason=reason)


class Aborted(WalletError):
    """Deadlock or serialization failure persisted past the bounded retries."""

    reason = DEADLOCK_RETRIES_EXHAUSTED
