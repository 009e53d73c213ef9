"""Bonus policy: how bets spend bonus funds, how wagering counts, when bonuses end.

The policy, in full:
- A bet spends cash first, then bonus funds, taking bonus funds from the oldest active bonus
  first (by grant time, then id).
- The whole stake (cash and bonus part) counts toward wagering, oldest active bonus first;
  what exceeds that bonus's outstanding requirement carries to the next active bonus.
- When a bonus's wagered total reaches its requirement, its remaining funds convert to cash
  and the bonus is `converted`. A requirement of 0 converts on grant.
- A win's bonus share (see rules.win_split) is credited to the oldest active bonus. With no
  active bonus left, the whole win is cash: the stake it pays out on has either converted
  already or been returned to the pool, and the provider's win must be credited whole.
- Expiry or forfeit returns the bonus's remaining funds to the bonus pool (`expired` /
  `forfeited`). Expired bonuses are swept before any operation that spends or credits bonus
  funds, and by a periodic sweeper.
- Rollback of a bet returns each bonus debit to the bonus it came from if that bonus is
  still active, to cash if it has converted since, and to the bonus pool if it was
  forfeited or expired (the player never keeps funds of a bonus that was taken back). The
  bet's wagering contribution is taken back from bonuses still active.
"""

from __future__ import annotations

from datetime import datetime

from wallet_core.domain.ledger import BONUS_POOL, BonusState, Bucket, Draft


def spend(draft: Draft, amount_minor: int, *, dest: str) -> list[tuple[int, int]]:
    """Move `amount_minor` of bonus funds to `dest`, oldest bonus first; returns debits."""
    debits: list[tuple[int, int]] = []
    remaining = amount_minor
    for bonus in draft.active_bonuses():
        if remaining == 0:
            break
        take = min(bonus.balance_minor, remaining)
        if take == 0:
            continue
        bonus.balance_minor -= take
        draft.touch(bonus)
        draft.move(take, source=Bucket.BONUS, dest=dest)
        debits.append((bonus.bonus_id, take))
        remaining -= take
    if remaining:
        raise AssertionError("bonus bucket held less than its active bonuses")
    return debits


def add_wagering(draft: Draft, stake_minor: int) -> list[tuple[int, int]]:
    """Count a stake toward wagering; returns (bonus id, amount counted) per bonus."""
    counted: list[tuple[int, int]] = []
    remaining = stake_minor
    for bonus in draft.active_bonuses():
        if remaining == 0:
            break
        outstanding = max(bonus.wagering_required_minor - bonus.wagered_minor, 0)
        take = min(outstanding, remaining)
        if take == 0:
            continue
        bonus.wagered_minor += take
        draft.touch(bonus)
        counted.append((bonus.bonus_id, take))
        remaining -= take
    return counted


def convert_completed(draft: Draft) -> None:
    for bonus in draft.active_bonuses():
        if bonus.wagered_minor >= bonus.wagering_required_minor:
            draft.move(bonus.balance_minor, source=Bucket.BONUS, dest=Bucket.CASH)
            bonus.balance_minor = 0
            bonus.state = "converted"
            draft.touch(bonus)


def end(draft: Draft, bonus: BonusState, *, state: str) -> int:
    """Forfeit or expire: remaining funds go back to the pool; returns the amount."""
    amount = bonus.balance_minor
    draft.move(amount, source=Bucket.BONUS, dest=BONUS_POOL)
    bonus.balance_minor = 0
    bonus.state = state
    draft.touch(bonus)
    return amount


def expire_due(draft: Draft, now: datetime) -> list[tuple[int, int]]:
    """Expire every active bonus past its expiry; returns (bonus id, amount returned)."""
    return [(b.bonus_id, end(draft, b, state="expired"))
            for b in draft.active_bonuses() if b.expires_at <= now]


def credit(draft: Draft, amount_minor: int, *, source: str) -> bool:
    """Credit bonus funds to the oldest active bonus; False when there is none."""
    active = draft.active_bonuses()
    if not active:
        return False
    active[0].balance_minor += amount_minor
    draft.touch(active[0])
    draft.move(amount_minor, source=source, dest=Bucket.BONUS)
    return True


def restore(draft: Draft, debits: list[tuple[int, int]], wagered: list[tuple[int, int]],
            *, source: str) -> tuple[int, int]:
    """Undo a bet's bonus debits and wagering; returns (to cash, to bonus)."""
    by_id = {b.bonus_id: b for b in draft.bonuses}
    to_cash = to_bonus = 0
    for bonus_id, amount in debits:
        bonus = by_id.get(bonus_id)
        if bonus is not None and bonus.active:
            bonus.balance_minor += amount
            draft.touch(bonus)
            draft.move(amount, source=source, dest=Bucket.BONUS)
            to_bonus += amount
        elif bonus is not None and bonus.state == "converted":
            draft.move(amount, source=source, dest=Bucket.CASH)
            to_cash += amount
        else:
            draft.move(amount, source=source, dest=BONUS_POOL)
    for bonus_id, amount in wagered:
        bonus = by_id.get(bonus_id)
        if bonus is not None and bonus.active:
            bonus.wagered_minor = max(bonus.wagered_minor - amount, 0)
            draft.touch(bonus)
    return to_cash, to_bonus
