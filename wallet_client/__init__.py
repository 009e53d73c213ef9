"""wallet_client: the Python client of the wallet service (wallet.v1) for game, bonus and
payment services.

    from wallet_client import AsyncWalletClient, RoundKeys, InsufficientFunds

- `AsyncWalletClient` (asyncio) and `WalletClient` (blocking): a typed method per RPC,
  amounts as int minor units, results as frozen values (results.py);
- retries that cannot move money twice: the same request, so the same idempotency key,
  only for answers that leave the outcome unknown or did nothing, bounded by attempts and
  the caller's deadline (retry.py);
- one exception per ErrorInfo reason, carrying its metadata (errors.py);
- keys derived from (caller, round, action), so a restarted game server sends the same
  ones again (keys.py);
- `service_config()`: the gRPC service config (round_robin, retryPolicy) for callers that
  use the generated stubs directly.

Versioned with the wallet.v1 API (CHANGELOG.md): within 1.x, methods and exceptions are
only added.
"""

from __future__ import annotations

import json
from importlib import resources

from wallet_client.aio import CHANNEL_OPTIONS, AsyncWalletClient, RetryEvent
from wallet_client.errors import (
    AlreadyRolledBack,
    BalanceLimitExceeded,
    BatchRolledBack,
    BonusNotActive,
    BonusNotFound,
    DuplicatePspReference,
    InsufficientFunds,
    InvalidRequest,
    KeyReused,
    LimitExceeded,
    MessageTooLarge,
    NoActiveBonus,
    NotFound,
    PermissionDenied,
    PlayerOnBreak,
    PlayerRestricted,
    RateLimited,
    Refused,
    Rejected,
    TransactionNotFound,
    Unauthenticated,
    WalletBlocked,
    WalletError,
    WalletInternal,
    WalletNotFound,
    WalletUnavailable,
    WithdrawalAlreadyFinal,
    WithdrawalNotCommitted,
    WithdrawalNotFound,
)
from wallet_client.keys import RoundKeys, operation_key
from wallet_client.results import (
    Balances,
    Bonus,
    BonusForfeited,
    BonusGranted,
    LimitChange,
    Limits,
    LimitsChanged,
    OpenedWallet,
    Operation,
    Reserved,
    RolledBack,
    Staked,
    Transaction,
    TransactionPage,
)
from wallet_client.retry import RetryPolicy
from wallet_client.sync import WalletClient

__version__ = "1.0.0"


def service_config() -> str:
    """The service config as JSON, for `grpc.aio.insecure_channel(target, options=[
    ("grpc.service_config", service_config())])` with the generated stubs: round_robin,
    a 5 s timeout, and retries of UNAVAILABLE and ABORTED (gRPC resends the same bytes, so
    the same idempotency key)."""
    text = resources.files(__package__).joinpath("service_config.json").read_text()
    return json.dumps(json.loads(text), separators=(",", ":"))


__all__ = [
    "CHANNEL_OPTIONS", "AlreadyRolledBack", "AsyncWalletClient", "BalanceLimitExceeded",
    "Balances", "BatchRolledBack", "Bonus", "BonusForfeited", "BonusGranted",
    "BonusNotActive", "BonusNotFound", "DuplicatePspReference", "InsufficientFunds",
    "InvalidRequest", "KeyReused", "LimitChange", "LimitExceeded", "Limits", "LimitsChanged",
    "MessageTooLarge", "NoActiveBonus", "NotFound", "OpenedWallet", "Operation",
    "PermissionDenied", "PlayerOnBreak", "PlayerRestricted", "RateLimited", "Refused",
    "Rejected", "Reserved", "RetryEvent", "RetryPolicy", "RolledBack", "RoundKeys", "Staked",
    "Transaction", "TransactionNotFound", "TransactionPage", "Unauthenticated",
    "WalletBlocked", "WalletClient", "WalletError", "WalletInternal", "WalletNotFound",
    "WalletUnavailable", "WithdrawalAlreadyFinal", "WithdrawalNotCommitted",
    "WithdrawalNotFound", "__version__", "operation_key", "service_config",
]
