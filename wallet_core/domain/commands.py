"""Validated commands: one frozen dataclass per operation that moves money.

A command's fingerprint is what "the same request" means for idempotency: every field but
the key, so a retry with the same key and the same fields replays, and the same key with
any field changed is IDEMPOTENCY_KEY_REUSED. An optional field left unset (None) is not part
of the fingerprint, so adding one (Deposit.conversion) leaves the fingerprints of requests
recorded before it unchanged: their retries still replay.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from wallet_core.domain.limits import Change, Guard


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    kind: ClassVar[str] = ""
    idempotency_key: str

    def fingerprint(self) -> bytes:
        fields = tuple(
            (f.name, getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "idempotency_key" and getattr(self, f.name) is not None
        )
        return hashlib.sha256(repr((self.kind, fields)).encode()).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class WalletCommand(Command):
    """A command addressed to a (player, currency) wallet."""

    player_id: str
    currency: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenWallet(WalletCommand):
    kind: ClassVar[str] = "open"


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversion:
    """What the player paid, in another currency, and the rate it was converted at
    (service_kit.fx). `rate` is kept as the provider's decimal string: it is recorded, and
    part of the fingerprint, exactly as sent."""

    paid_currency: str
    paid_minor: int
    rate: str
    spread_bps: int
    rate_source: str
    rate_time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Deposit(WalletCommand):
    kind: ClassVar[str] = "deposit"
    amount_minor: int
    psp: str
    psp_reference: str
    conversion: Conversion | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReserveWithdrawal(WalletCommand):
    kind: ClassVar[str] = "withdrawal_reserve"
    amount_minor: int
    psp: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitWithdrawal(Command):
    kind: ClassVar[str] = "withdrawal_commit"
    withdrawal_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelWithdrawal(Command):
    kind: ClassVar[str] = "withdrawal_cancel"
    withdrawal_id: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReverseWithdrawal(Command):
    """A committed payout the PSP reported as failed or returned afterwards."""

    kind: ClassVar[str] = "withdrawal_reverse"
    withdrawal_id: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Bet(WalletCommand):
    kind: ClassVar[str] = "bet"
    amount_minor: int
    game_id: str
    round_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Win(WalletCommand):
    kind: ClassVar[str] = "win"
    amount_minor: int
    game_id: str
    round_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Rollback(WalletCommand):
    kind: ClassVar[str] = "rollback"
    game_id: str
    bet_idempotency_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantBonus(WalletCommand):
    kind: ClassVar[str] = "bonus_grant"
    amount_minor: int
    wagering_required_minor: int
    expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ForfeitBonus(Command):
    kind: ClassVar[str] = "bonus_forfeit"
    bonus_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Chargeback(WalletCommand):
    kind: ClassVar[str] = "chargeback"
    amount_minor: int
    psp: str
    psp_reference: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Adjust(WalletCommand):
    kind: ClassVar[str] = "adjust"
    bucket: str  # "cash" or "bonus"
    amount_minor: int  # signed
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SetLimits(WalletCommand):
    """Responsible-gambling limits of one wallet (domain.limits)."""

    kind: ClassVar[str] = "set_limits"
    changes: tuple[Change, ...]
    time_zone: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Exclude(WalletCommand):
    """A time-out or self-exclusion of the player, in every currency (domain.limits);
    `currency` names the wallet the journal row goes to."""

    kind: ClassVar[str] = "exclude"
    break_kind: str  # "timeout" | "self_exclusion"
    duration_s: int | None = None  # None only for a permanent self-exclusion
    permanent: bool = False

    def apply(self, guard: Guard, now: datetime) -> Guard:
        if self.permanent:
            return guard.with_break(permanent=True, now=now)
        assert self.duration_s is not None
        length = timedelta(seconds=self.duration_s)
        if self.break_kind == "timeout":
            return guard.with_break(timeout=length, now=now)
        return guard.with_break(exclusion=length, now=now)


@dataclass(frozen=True, slots=True, kw_only=True)
class Restrict(WalletCommand):
    """The operator's compliance restriction of the player, in every currency, or its lifting
    (`reason` None); `currency` names the wallet the journal row goes to."""

    kind: ClassVar[str] = "restrict"
    reason: str | None
    until: datetime | None = None

    def apply(self, guard: Guard, now: datetime) -> Guard:
        return guard.with_restriction(self.reason, self.until, now)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpireBonus(Command):
    """Internal: the sweeper's expiry of one bonus (caller "system")."""

    kind: ClassVar[str] = "bonus_expire"
    bonus_id: int
