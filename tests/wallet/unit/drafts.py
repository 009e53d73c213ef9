"""Builders for the pure money-rule tests: a wallet's Draft, its bonuses, the commands the
rules take, and views of what a draft moved (net postings, a comparable snapshot).

One wallet throughout (WALLET_ID, PLAYER, in CURRENCY), one game and one PSP, so expected
postings can be written as plain `{account: amount}` tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from wallet_core.domain import commands as cmd
from wallet_core.domain.ledger import (
    BonusState,
    Bucket,
    Draft,
    Posting,
    house_account,
    player_account,
    psp_account,
)

WALLET_ID = 7
PLAYER = "p-1"
CURRENCY = "EUR"
GAME = "slots"
PSP = "acme"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
# Far enough that no test's clock reaches it unless it means to.
EXPIRES_LATER = T0 + timedelta(days=30)
# A requirement no test's stakes meet, for bonuses that must stay active.
WAGERING_UNREACHED_MINOR = 1_000_000

CASH = player_account(WALLET_ID, Bucket.CASH)
BONUS = player_account(WALLET_ID, Bucket.BONUS)
RESERVED = player_account(WALLET_ID, Bucket.RESERVED)
HOUSE = house_account(GAME)
PSP_CLEARING = psp_account(PSP)

R = TypeVar("R")
BonusView = tuple[int, str, int, int]  # (id, state, balance_minor, wagered_minor)
Snapshot = tuple[int, int, int, tuple[BonusView, ...]]


def make_bonus(bonus_id: int, balance_minor: int, *,
               required_minor: int = WAGERING_UNREACHED_MINOR, wagered_minor: int = 0,
               state: str = "active", expires_at: datetime = EXPIRES_LATER) -> BonusState:
    """A stored bonus; a bonus that is no longer active holds nothing, as in storage."""
    return BonusState(bonus_id=bonus_id, state=state, granted_minor=balance_minor,
                      balance_minor=balance_minor if state == "active" else 0,
                      wagering_required_minor=required_minor, wagered_minor=wagered_minor,
                      expires_at=expires_at, created_at=T0 - timedelta(days=1))


def make_draft(cash: int = 0, *, bonuses: Iterable[BonusState] = (),
               reserved: int = 0) -> Draft:
    """A freshly locked wallet: the bonus bucket is what its active bonuses hold."""
    listed = list(bonuses)
    return Draft(wallet_id=WALLET_ID, player_id=PLAYER, cash=cash,
                 bonus=sum(b.balance_minor for b in listed if b.active), reserved=reserved,
                 bonuses=listed)


def bonus_balances(bonuses: Sequence[tuple[int, int]]) -> list[BonusState]:
    """Active bonuses, oldest first, from (id, balance) pairs; requirements unreached."""
    return [make_bonus(bonus_id, balance) for bonus_id, balance in bonuses]


def bet_cmd(amount_minor: int, *, key: str = "bet-1", round_id: str = "r1") -> cmd.Bet:
    return cmd.Bet(idempotency_key=key, player_id=PLAYER, currency=CURRENCY,
                   amount_minor=amount_minor, game_id=GAME, round_id=round_id)


def win_cmd(amount_minor: int, *, key: str = "win-1", round_id: str = "r1") -> cmd.Win:
    return cmd.Win(idempotency_key=key, player_id=PLAYER, currency=CURRENCY,
                   amount_minor=amount_minor, game_id=GAME, round_id=round_id)


def rollback_cmd(bet_key: str = "bet-1", *, key: str = "rollback-1") -> cmd.Rollback:
    return cmd.Rollback(idempotency_key=key, player_id=PLAYER, currency=CURRENCY,
                        game_id=GAME, bet_idempotency_key=bet_key)


def deposit_cmd(amount_minor: int, *, key: str = "dep-1",
                conversion: cmd.Conversion | None = None) -> cmd.Deposit:
    return cmd.Deposit(idempotency_key=key, player_id=PLAYER, currency=CURRENCY,
                       amount_minor=amount_minor, psp=PSP, psp_reference=key,
                       conversion=conversion)


def conversion(paid_minor: int, *, paid_currency: str = "BTC") -> cmd.Conversion:
    return cmd.Conversion(paid_currency=paid_currency, paid_minor=paid_minor, rate="60000",
                          spread_bps=150, rate_source="test", rate_time=T0)


def chargeback_cmd(amount_minor: int, *, key: str = "cb-1") -> cmd.Chargeback:
    return cmd.Chargeback(idempotency_key=key, player_id=PLAYER, currency=CURRENCY,
                          amount_minor=amount_minor, psp=PSP, psp_reference=key)


def reserve_cmd(amount_minor: int, *, key: str = "wd-1") -> cmd.ReserveWithdrawal:
    return cmd.ReserveWithdrawal(idempotency_key=key, player_id=PLAYER, currency=CURRENCY,
                                 amount_minor=amount_minor, psp=PSP)


def adjust_cmd(bucket: Bucket, amount_minor: int, *, key: str = "adj-1") -> cmd.Adjust:
    return cmd.Adjust(idempotency_key=key, player_id=PLAYER, currency=CURRENCY,
                      bucket=bucket.value, amount_minor=amount_minor, reason="support")


def grant_cmd(amount_minor: int, *, required_minor: int, expires_at: datetime = EXPIRES_LATER,
              key: str = "grant-1") -> cmd.GrantBonus:
    return cmd.GrantBonus(idempotency_key=key, player_id=PLAYER, currency=CURRENCY,
                          amount_minor=amount_minor, wagering_required_minor=required_minor,
                          expires_at=expires_at)


def new_bonus(bonus_id: int, c: cmd.GrantBonus, now: datetime) -> BonusState:
    """The bonus row a grant creates before its rule runs (as wallet_core.operations does)."""
    return BonusState(bonus_id=bonus_id, state="active", granted_minor=c.amount_minor,
                      balance_minor=0, wagering_required_minor=c.wagering_required_minor,
                      wagered_minor=0, expires_at=c.expires_at, created_at=now)


def net(postings: Iterable[Posting]) -> dict[str, int]:
    """The wallet-currency postings as {account: amount}; foreign ones are refused here."""
    out: dict[str, int] = {}
    for p in postings:
        assert p.currency is None, f"unexpected foreign posting {p}"
        out[p.account] = out.get(p.account, 0) + p.amount_minor
    return out


def sums_by_currency(postings: Iterable[Posting]) -> dict[str | None, int]:
    """Total of the postings per currency (None: the wallet's own)."""
    out: dict[str | None, int] = {}
    for p in postings:
        out[p.currency] = out.get(p.currency, 0) + p.amount_minor
    return out


def snapshot(draft: Draft) -> Snapshot:
    """Everything a rule may change on a wallet, in a form that compares by value."""
    return (draft.cash, draft.bonus, draft.reserved,
            tuple((b.bonus_id, b.state, b.balance_minor, b.wagered_minor)
                  for b in draft.bonuses))


def bonus_view(draft: Draft) -> dict[int, tuple[str, int, int]]:
    """{bonus id: (state, balance_minor, wagered_minor)}."""
    return {b.bonus_id: (b.state, b.balance_minor, b.wagered_minor) for b in draft.bonuses}


def step(draft: Draft, rule: Callable[[Draft], R]) -> tuple[Draft, R, list[Posting]]:
    """One operation as the use cases run it: on a fork of the settled wallet, invariants
    checked, then settled for the next one. Returns (wallet after, result, its postings)."""
    work = draft.fork()
    result = rule(work)
    work.check_invariants()
    return work.settled(), result, work.postings()
