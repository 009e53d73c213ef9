"""What wallet calls return: plain frozen values with amounts as int minor units, made
from the protobuf replies in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from google.protobuf.timestamp_pb2 import Timestamp
from wallet.v1 import wallet_service_pb2 as pb


def _time(ts: Timestamp, present: bool = True) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if present else None


def _enum_name(enum: object, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix)  # type: ignore[attr-defined,no-any-return]


@dataclass(frozen=True, slots=True)
class Balances:
    """One wallet's buckets, in minor units of `currency`."""

    currency: str
    cash_minor: int
    bonus_minor: int
    reserved_minor: int
    available_minor: int

    @classmethod
    def of(cls, b: pb.Balances) -> Balances:
        return cls(b.currency, b.cash, b.bonus, b.reserved, b.available)


@dataclass(frozen=True, slots=True)
class Operation:
    """The journal entry an operation wrote; `replay` is True when this is the recorded
    outcome of an earlier call with the same key."""

    transaction_id: str
    balances: Balances
    replay: bool
    created_at: datetime | None

    @classmethod
    def of(cls, r: pb.OperationResult) -> Operation:
        return cls(r.transaction_id, Balances.of(r.balances), r.replay,
                   _time(r.created_at, r.HasField("created_at")))


@dataclass(frozen=True, slots=True)
class OpenedWallet:
    operation: Operation
    created: bool  # False when the wallet already existed


@dataclass(frozen=True, slots=True)
class Staked:
    """A Bet or a Win, with how it split between the cash and bonus buckets."""

    operation: Operation
    cash_minor: int
    bonus_minor: int


@dataclass(frozen=True, slots=True)
class RolledBack:
    operation: Operation
    outcome: str  # "REVERSED", "ALREADY_ROLLED_BACK" or "BET_NOT_FOUND"
    cash_minor: int
    bonus_minor: int


@dataclass(frozen=True, slots=True)
class Reserved:
    operation: Operation
    withdrawal_id: str


@dataclass(frozen=True, slots=True)
class BonusGranted:
    operation: Operation
    bonus_id: str


@dataclass(frozen=True, slots=True)
class BonusForfeited:
    operation: Operation
    forfeited_minor: int


@dataclass(frozen=True, slots=True)
class Bonus:
    bonus_id: str
    state: str  # "ACTIVE", "CONVERTED", "FORFEITED" or "EXPIRED"
    granted_minor: int
    balance_minor: int
    wagering_requirement_minor: int
    wagered_minor: int
    expires_at: datetime | None
    created_at: datetime | None

    @classmethod
    def of(cls, b: pb.Bonus) -> Bonus:
        return cls(b.bonus_id, _enum_name(pb.BonusState, b.state, "BONUS_STATE_"),
                   b.granted_amount, b.balance, b.wagering_requirement, b.wagered,
                   _time(b.expires_at, b.HasField("expires_at")),
                   _time(b.created_at, b.HasField("created_at")))


@dataclass(frozen=True, slots=True)
class Posting:
    account: str
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class Transaction:
    transaction_id: str
    kind: str
    status: str  # "ok", or "rejected" with `reason`
    reason: str
    player_id: str
    currency: str
    caller: str
    idempotency_key: str
    created_at: datetime | None
    postings: tuple[Posting, ...]
    balances: Balances | None
    details: Mapping[str, str]

    @classmethod
    def of(cls, t: pb.Transaction) -> Transaction:
        return cls(t.transaction_id, t.kind, t.status, t.reason, t.player_id, t.currency,
                   t.caller, t.idempotency_key, _time(t.created_at, t.HasField("created_at")),
                   tuple(Posting(p.account, p.amount, p.currency) for p in t.postings),
                   Balances.of(t.balances) if t.HasField("balances") else None,
                   MappingProxyType(dict(t.details)))


@dataclass(frozen=True, slots=True)
class TransactionPage:
    transactions: tuple[Transaction, ...]
    next_page_token: str  # "" on the last page


@dataclass(frozen=True, slots=True)
class Limit:
    kind: str  # "DEPOSIT", "LOSS" or "WAGER"
    period: str  # "DAY", "WEEK" or "MONTH"
    amount_minor: int
    used_minor: int
    remaining_minor: int
    period_start: datetime | None


@dataclass(frozen=True, slots=True)
class PendingLimit:
    kind: str
    period: str
    amount_minor: int
    remove: bool
    effective_at: datetime | None


@dataclass(frozen=True, slots=True)
class Limits:
    """Responsible-gambling limits and breaks, and the operator's restriction."""

    limits: tuple[Limit, ...]
    pending: tuple[PendingLimit, ...]
    timeout_until: datetime | None
    excluded_until: datetime | None
    excluded_permanently: bool
    time_zone: str
    restriction: str  # "", "UNDERAGE" or "COUNTRY_BLOCKED"
    restricted_until: datetime | None

    @classmethod
    def of(cls, m: pb.Limits) -> Limits:
        def kind(v: int) -> str:
            return _enum_name(pb.LimitKind, v, "LIMIT_KIND_")

        def period(v: int) -> str:
            return _enum_name(pb.LimitPeriod, v, "LIMIT_PERIOD_")

        return cls(
            tuple(Limit(kind(x.kind), period(x.period), x.amount, x.used, x.remaining,
                        _time(x.period_start, x.HasField("period_start"))) for x in m.limits),
            tuple(PendingLimit(kind(x.kind), period(x.period), x.amount, x.remove,
                               _time(x.effective_at, x.HasField("effective_at")))
                  for x in m.pending),
            _time(m.timeout_until, m.HasField("timeout_until")),
            _time(m.excluded_until, m.HasField("excluded_until")),
            m.excluded_permanently, m.time_zone, m.restriction,
            _time(m.restricted_until, m.HasField("restricted_until")))


@dataclass(frozen=True, slots=True)
class LimitsChanged:
    """SetLimits, Exclude or Restrict: the entry written and the limits after it."""

    operation: Operation
    limits: Limits

    @classmethod
    def of(cls, reply: pb.SetLimitsResponse | pb.ExcludeResponse | pb.RestrictResponse,
           ) -> LimitsChanged:
        return cls(Operation.of(reply.result), Limits.of(reply.limits))


@dataclass(frozen=True, slots=True)
class LimitChange:
    """One change for SetLimits: a new amount, or remove=True."""

    kind: str  # "DEPOSIT", "LOSS" or "WAGER"
    period: str  # "DAY", "WEEK" or "MONTH"
    amount_minor: int = 0
    remove: bool = False

    def message(self) -> pb.LimitChange:
        return pb.LimitChange(kind=f"LIMIT_KIND_{self.kind}",
                              period=f"LIMIT_PERIOD_{self.period}",
                              amount=self.amount_minor, remove=self.remove)


MoneyResult = (OpenedWallet | Operation | Staked | RolledBack | Reserved | BonusGranted
               | BonusForfeited)


def money_result(reply: object) -> MoneyResult:
    """The typed result of a money-moving call's reply (single or inside a batch)."""
    result = getattr(reply, "result", None)
    assert isinstance(result, pb.OperationResult), f"not a money reply: {type(reply)}"
    op = Operation.of(result)
    match reply:
        case pb.OpenWalletResponse():
            return OpenedWallet(op, reply.created)
        case pb.BetResponse() | pb.WinResponse():
            return Staked(op, reply.cash_amount, reply.bonus_amount)
        case pb.RollbackResponse():
            return RolledBack(op, _enum_name(pb.RollbackOutcome, reply.outcome,
                                             "ROLLBACK_OUTCOME_"),
                              reply.cash_amount, reply.bonus_amount)
        case pb.ReserveWithdrawalResponse():
            return Reserved(op, reply.withdrawal_id)
        case pb.GrantBonusResponse():
            return BonusGranted(op, reply.bonus_id)
        case pb.ForfeitBonusResponse():
            return BonusForfeited(op, reply.forfeited_amount)
    return op
