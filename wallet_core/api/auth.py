"""Bearer-token authentication and per-method scopes.

Tokens are compared by their SHA-256 digest (a dict lookup on a digest leaks nothing usable
about the token); the raw token is never logged or echoed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from wallet_core.config import Caller

# Which scopes may call each method (any one suffices).
METHOD_SCOPES: dict[str, frozenset[str]] = {
    "OpenWallet": frozenset({"game", "payments", "support"}),
    "GetBalance": frozenset({"read", "game", "bonus", "payments", "support"}),
    "GetBonuses": frozenset({"read", "bonus", "support"}),
    "Deposit": frozenset({"payments"}),
    "ReserveWithdrawal": frozenset({"payments"}),
    "CommitWithdrawal": frozenset({"payments"}),
    "CancelWithdrawal": frozenset({"payments"}),
    "ReverseWithdrawal": frozenset({"payments"}),
    "Chargeback": frozenset({"payments"}),
    "Bet": frozenset({"game"}),
    "Win": frozenset({"game"}),
    "Rollback": frozenset({"game"}),
    "GrantBonus": frozenset({"bonus"}),
    "ForfeitBonus": frozenset({"bonus"}),
    "Adjust": frozenset({"support"}),
    # Responsible gambling (docs/COMPLIANCE.md): the player's own limits and breaks, set
    # through the casino's account service; the bridge reads them before a deposit.
    "SetLimits": frozenset({"limits"}),
    "Exclude": frozenset({"limits"}),
    # The operator's compliance restriction (under age, blocked country): the bridge sets
    # it from a player's KYC result.
    "Restrict": frozenset({"compliance"}),
    "GetLimits": frozenset({"limits", "read", "support", "payments", "compliance"}),
    # payments: the bridge asks whether a credit it sent under a key was recorded before it
    # re-prices one whose rate aged out (docs/FX.md, rate pinning).
    "GetTransaction": frozenset({"support", "read", "payments"}),
    "ListTransactions": frozenset({"support", "read"}),
    # Any money-moving scope; each operation inside is checked against its own method.
    "ExecuteBatch": frozenset({"game", "bonus", "payments", "support"}),
}


# Stable reasons (ErrorInfo) of refused credentials.
TOKEN_MISSING = "TOKEN_MISSING"
TOKEN_UNKNOWN = "TOKEN_UNKNOWN"
SCOPE_NOT_ALLOWED = "SCOPE_NOT_ALLOWED"


class AuthError(Exception):
    """UNAUTHENTICATED (no or unknown token) or PERMISSION_DENIED (scope), with a stable
    reason; the message never carries the token."""

    def __init__(self, message: str, *, reason: str, metadata: dict[str, str]) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = metadata

    @property
    def unauthenticated(self) -> bool:
        return self.reason != SCOPE_NOT_ALLOWED


def authenticate(metadata: Mapping[str, str], callers: Mapping[bytes, Caller],
                 method: str) -> Caller:
    header = metadata.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("missing bearer token in the authorization metadata",
                        reason=TOKEN_MISSING, metadata={"method": method})
    caller = callers.get(hashlib.sha256(token.strip().encode()).digest())
    if caller is None:
        raise AuthError("unknown bearer token", reason=TOKEN_UNKNOWN, metadata={"method": method})
    if not caller.scopes & METHOD_SCOPES[method]:
        allowed = ",".join(sorted(METHOD_SCOPES[method]))
        raise AuthError(f"service {caller.name} may not call {method} (needs one of: {allowed})",
                        reason=SCOPE_NOT_ALLOWED,
                        metadata={"method": method, "caller": caller.name,
                                  "scopes_allowed": allowed})
    return caller
