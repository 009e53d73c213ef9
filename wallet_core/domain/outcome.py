"""The outcome of an operation: what the journal records and every replay returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from wallet_core.domain.errors import Rejected
from wallet_core.domain.ledger import Balances, Posting


@dataclass(frozen=True, slots=True)
class Outcome:
    transaction_id: int
    created_at: datetime
    kind: str
    currency: str
    balances: Balances | None  # None for rejections
    fields: dict[str, Any] = field(default_factory=dict)  # op-specific: split, ids, ...
    rejection: Rejected | None = None
    replay: bool = False

    def as_replay(self) -> Outcome:
        return replace(self, replay=True)

    def to_record(self) -> dict[str, Any]:
        """The journal's `outcome` column (and the Redis cache value, with the fingerprint)."""
        return outcome_record(currency=self.currency, fields=self.fields,
                              balances=self.balances,
                              message=self.rejection.message if self.rejection else None)

    @classmethod
    def from_record(cls, *, transaction_id: int, created_at: datetime, kind: str,
                    status: str, reason: str | None, record: dict[str, Any]) -> Outcome:
        raw = record.get("balances")
        rejection = None
        if status == "rejected":
            rejection = Rejected(str(record.get("message", "")), reason=reason)
            rejection.metadata["transaction_id"] = str(transaction_id)
        return cls(transaction_id=transaction_id, created_at=created_at, kind=kind,
                   currency=str(record.get("currency", "")),
                   balances=Balances(*raw) if raw is not None else None,
                   fields=dict(record.get("fields", {})), rejection=rejection)


def outcome_record(*, currency: str, fields: dict[str, Any], balances: Balances | None,
                   message: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {"currency": currency, "fields": fields}
    if balances is not None:
        record["balances"] = [balances.cash, balances.bonus, balances.reserved]
    if message is not None:
        record["message"] = message
    return record


@dataclass(frozen=True, slots=True)
class TransactionView:
    """One journal row as support and audit read it: what was asked, what moved, the answer."""

    transaction_id: int
    kind: str
    status: str
    reason: str | None
    player_id: str | None
    currency: str | None
    caller: str
    idempotency_key: str
    created_at: datetime
    postings: list[Posting]
    balances: Balances | None
    details: dict[str, str]
