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
    # payments: the bridge asks whether a credit it sent under a key was recorded before it
    # re-prices one whose rate aged out (docs/FX.md, rate pinning).
    "GetTransaction": frozenset({"support", "read", "payments"}),
    "ListTransactions": frozenset({"support", "read"}),
    # Any money-moving scope; each operation inside is checked against its own method.
    "ExecuteBatch": frozenset({"game", "bonus", "payments", "support"}),
}


class AuthError(Exception):
    def __init__(self, message: str, *, unauthenticated: bool) -> None:
        super().__init__(message)
        self.unauthenticated = unauthenticated


def authenticate(metadata: Mapping[str, str], callers: Mapping[bytes, Caller],
                 method: str) -> Caller:
    header = metadata.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("missing bearer token in the authorization metadata",
                        unauthenticated=True)
    caller = callers.get(hashlib.sha256(token.strip().encode()).digest())
    if caller is None:
        raise AuthError("unknown bearer token", unauthenticated=True)
    if not caller.scopes & METHOD_SCOPES[method]:
        raise AuthError(f"service {caller.name} may not call {method} (needs one of "
                        f"{sorted(METHOD_SCOPES[method])})", unauthenticated=False)
    return caller
