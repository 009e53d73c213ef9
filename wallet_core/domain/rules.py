"""The money rules of each operation, applied to a locked wallet's Draft.

Each function either changes the draft by balanced moves and returns the operation's
result fields, or raises a Rejected error (recorded and replayed by the caller). Nothing
here does I/O; the use cases load the draft, call these, and write the draft back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wallet_core.domain import bonus as bonus_policy
from wallet_core.domain import commands as cmd
from wallet_core.domain import errors
from wallet_core.domain.ledger import (
    ADJUSTMENTS,
    BONUS_POOL,
    BonusState,
    Bucket,
    Draft,
    chargeback_account,
    fx_account,
    house_account,
    psp_account,
)
from wallet_core.domain.limits import Guard, Kind


@dataclass(frozen=True, slots=True)
class BetRecord:
    """What a rollback needs to reverse a bet exactly."""

    cash_minor: int
    bonus_minor: int
    bonus_debits: list[tuple[int, int]]
    wagered: list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class RoundStake:
    cash_minor: int
    bonus_minor: int


def _refuse_in_debt(draft: Draft) -> None:
    if draft.cash < 0:
        raise errors.rejected(errors.WALLET_BLOCKED,
                              "the wallet is in debt after a chargeback; bets and withdrawals "
                              "are refused until it is covered")


def _now(now: datetime | None) -> datetime:
    if now is None:
        raise AssertionError("a wallet with limits needs the time to apply them")
    return now


def _guard(draft: Draft, now: datetime) -> Guard | None:
    """The wallet's limits as of now, None when the player set none."""
    return None if draft.guard is None else draft.guard.at(now)


def deposit(draft: Draft, c: cmd.Deposit, now: datetime | None = None) -> dict[str, Any]:
    """Cash in from the PSP's clearing account. A converted deposit goes through the FX
    desk: the PSP's clearing pays the paid currency to fx:<paid>, and fx:<wallet currency>
    pays the credit to cash, so each currency balances on its own (docs/FX.md). Refused
    during a break or over a deposit limit (domain.limits)."""
    guard = None if draft.guard is None else draft.guard.at(_now(now))
    if guard is not None:
        guard.refuse_break(_now(now))
        guard.refuse_over((Kind.DEPOSIT,), c.amount_minor)
        draft.set_guard(guard.counted(Kind.DEPOSIT, c.amount_minor))
    conversion = c.conversion
    if conversion is None:
        draft.move(c.amount_minor, source=psp_account(c.psp), dest=Bucket.CASH)
        return {}
    draft.move_foreign(conversion.paid_minor, currency=conversion.paid_currency,
                       source=psp_account(c.psp), dest=fx_account(conversion.paid_currency))
    draft.move(c.amount_minor, source=fx_account(c.currency), dest=Bucket.CASH)
    return {}


def reserve_withdrawal(draft: Draft, c: cmd.ReserveWithdrawal) -> dict[str, Any]:
    _refuse_in_debt(draft)
    if c.amount_minor > draft.cash:
        raise errors.rejected(errors.INSUFFICIENT_FUNDS,
                              "amount is more than the withdrawable cash")
    draft.move(c.amount_minor, source=Bucket.CASH, dest=Bucket.RESERVED)
    return {}


def commit_withdrawal(draft: Draft, amount_minor: int, psp: str) -> dict[str, Any]:
    draft.move(amount_minor, source=Bucket.RESERVED, dest=psp_account(psp))
    return {}


def cancel_withdrawal(draft: Draft, amount_minor: int) -> dict[str, Any]:
    draft.move(amount_minor, source=Bucket.RESERVED, dest=Bucket.CASH)
    return {}


def reverse_withdrawal(draft: Draft, amount_minor: int, psp: str) -> dict[str, Any]:
    """The PSP returned a committed payout: the amount comes back from the PSP's clearing
    account to cash (nothing is held for it any more). Never refused for debt: it only
    credits the player, and the credit helps cover the debt."""
    draft.move(amount_minor, source=psp_account(psp), dest=Bucket.CASH)
    return {}


def bet(draft: Draft, c: cmd.Bet, now: datetime) -> BetRecord:
    """Refused during a break, or when the stake would cross a wager or loss limit (the
    whole stake counts for both, bonus money too)."""
    guard = _guard(draft, now)
    if guard is not None:
        guard.refuse_break(now)
        guard.refuse_over((Kind.WAGER, Kind.LOSS), c.amount_minor)
        draft.set_guard(guard.counted(Kind.WAGER, c.amount_minor, Kind.LOSS))
    _refuse_in_debt(draft)
    bonus_policy.expire_due(draft, now)
    if c.amount_minor > draft.cash + draft.bonus:
        raise errors.rejected(errors.INSUFFICIENT_FUNDS, "amount is more than cash plus bonus")
    house = house_account(c.game_id)
    cash_part = min(draft.cash, c.amount_minor)
    draft.move(cash_part, source=Bucket.CASH, dest=house)
    bonus_debits = bonus_policy.spend(draft, c.amount_minor - cash_part, dest=house)
    wagered = bonus_policy.add_wagering(draft, c.amount_minor)
    bonus_policy.convert_completed(draft)
    return BetRecord(cash_part, c.amount_minor - cash_part, bonus_debits, wagered)


def win_split(amount_minor: int, stake: RoundStake | None) -> tuple[int, int]:
    """Split a win as the round was staked; the rounding remainder goes to bonus, so
    rounding never turns bonus-staked winnings into cash."""
    if stake is None or stake.cash_minor + stake.bonus_minor == 0:
        return amount_minor, 0
    cash = amount_minor * stake.cash_minor // (stake.cash_minor + stake.bonus_minor)
    return cash, amount_minor - cash


def win(draft: Draft, c: cmd.Win, stake: RoundStake | None, now: datetime) -> dict[str, Any]:
    """Settled during a break too (the round was in play); a win lowers the loss used."""
    guard = _guard(draft, now)
    if guard is not None:
        draft.set_guard(guard.counted(Kind.LOSS, -c.amount_minor))
    bonus_policy.expire_due(draft, now)
    house = house_account(c.game_id)
    cash_part, bonus_part = win_split(c.amount_minor, stake)
    if bonus_part and not bonus_policy.credit(draft, bonus_part, source=house):
        cash_part, bonus_part = c.amount_minor, 0
    draft.move(cash_part, source=house, dest=Bucket.CASH)
    return {"cash_minor": cash_part, "bonus_minor": bonus_part}


def rollback(draft: Draft, c: cmd.Rollback, record: BetRecord, now: datetime) -> dict[str, Any]:
    """Reverse a bet. Never fails for lack of funds: it only credits the player. For the
    limits it is money back, like a win: it lowers the loss used (net of what came back in
    the period). The wager used keeps the stake: the bet may have been counted in an
    earlier period, or before the limit existed, and giving back what was never counted
    would let the wager limit be crossed."""
    guard = _guard(draft, now)
    if guard is not None:
        draft.set_guard(guard.counted(Kind.LOSS, -(record.cash_minor + record.bonus_minor)))
    bonus_policy.expire_due(draft, now)
    house = house_account(c.game_id)
    draft.move(record.cash_minor, source=house, dest=Bucket.CASH)
    bonus_policy.restore(draft, record.bonus_debits, record.wagered, source=house)
    return {"outcome": "reversed", "cash_minor": record.cash_minor,
            "bonus_minor": record.bonus_minor}


def grant_bonus(draft: Draft, c: cmd.GrantBonus, new_bonus: BonusState,
                now: datetime) -> dict[str, Any]:
    """Refused during a break: no incentives to a player who asked to stop."""
    guard = _guard(draft, now)
    if guard is not None:
        guard.refuse_break(now)
    bonus_policy.expire_due(draft, now)
    draft.bonuses.append(new_bonus)
    draft.touch(new_bonus)
    draft.move(c.amount_minor, source=BONUS_POOL, dest=Bucket.BONUS)
    new_bonus.balance_minor = c.amount_minor
    bonus_policy.convert_completed(draft)
    return {}


def forfeit_bonus(draft: Draft, bonus_id: int, now: datetime) -> dict[str, Any]:
    bonus_policy.expire_due(draft, now)
    target = next((b for b in draft.bonuses if b.bonus_id == bonus_id), None)
    if target is None:
        raise AssertionError(f"bonus {bonus_id} not loaded with its wallet")
    if not target.active:
        raise errors.rejected(errors.BONUS_NOT_ACTIVE, f"the bonus is already {target.state}")
    return {"forfeited_minor": bonus_policy.end(draft, target, state="forfeited")}


def chargeback(draft: Draft, c: cmd.Chargeback) -> dict[str, Any]:
    """The only operation that may take cash below zero (the wallet then is in debt)."""
    draft.move(c.amount_minor, source=Bucket.CASH, dest=chargeback_account(c.psp))
    return {}


def adjust(draft: Draft, c: cmd.Adjust, now: datetime) -> dict[str, Any]:
    if c.bucket == Bucket.CASH.value:
        if c.amount_minor > 0:
            draft.move(c.amount_minor, source=ADJUSTMENTS, dest=Bucket.CASH)
        elif -c.amount_minor > draft.cash:
            raise errors.rejected(errors.INSUFFICIENT_FUNDS, "the debit is more than the cash")
        else:
            draft.move(-c.amount_minor, source=Bucket.CASH, dest=ADJUSTMENTS)
        return {}
    # Bonus funds always belong to a bonus: corrections apply to the oldest active one.
    bonus_policy.expire_due(draft, now)
    active = draft.active_bonuses()
    if not active:
        raise errors.rejected(errors.NO_ACTIVE_BONUS, "the wallet has no active bonus to adjust")
    target = active[0]
    if c.amount_minor > 0:
        target.balance_minor += c.amount_minor
        draft.move(c.amount_minor, source=ADJUSTMENTS, dest=Bucket.BONUS)
    elif -c.amount_minor > target.balance_minor:
        raise errors.rejected(errors.INSUFFICIENT_FUNDS,
                              "the debit is more than the oldest active bonus holds")
    else:
        target.balance_minor += c.amount_minor
        draft.move(-c.amount_minor, source=Bucket.BONUS, dest=ADJUSTMENTS)
    draft.touch(target)
    return {"bonus_id": str(target.bonus_id)}
