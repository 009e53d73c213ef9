"""The money rules of each operation (wallet_core.domain.rules) on an in-memory Draft:
the bet split, wins and their split by stake, exact rollback, withdrawals, deposits with and
without a conversion, chargebacks and the debt they leave, and support adjustments. Every
case states the exact buckets, bonus balances and postings it expects."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from tests.wallet.unit.drafts import (
    BONUS,
    CASH,
    HOUSE,
    PSP,
    PSP_CLEARING,
    RESERVED,
    T0,
    adjust_cmd,
    bet_cmd,
    bonus_balances,
    bonus_view,
    chargeback_cmd,
    conversion,
    deposit_cmd,
    make_bonus,
    make_draft,
    net,
    reserve_cmd,
    rollback_cmd,
    snapshot,
    step,
    sums_by_currency,
    win_cmd,
)
from wallet_core.domain import errors, rules
from wallet_core.domain.errors import Rejected
from wallet_core.domain.ledger import (
    ADJUSTMENTS,
    BONUS_POOL,
    Balances,
    BonusState,
    Bucket,
    Draft,
    Posting,
    chargeback_account,
    fx_account,
)
from wallet_core.domain.rules import RoundStake

# -- bet split --------------------------------------------------------------------------------

# (case, cash, active bonuses oldest first as (id, balance), bet, cash after,
#  {bonus id: balance after}, bonus debits recorded)
BET_SPLITS = [
    ("cash covers it", 500, [(1, 200)], 300, 200, {1: 200}, []),
    ("cash exactly", 300, [(1, 200)], 300, 0, {1: 200}, []),
    ("cash then bonus", 100, [(1, 200)], 250, 0, {1: 50}, [(1, 150)]),
    ("oldest bonus first", 0, [(1, 100), (2, 100)], 50, 0, {1: 50, 2: 100}, [(1, 50)]),
    ("spills into the next bonus", 20, [(1, 100), (2, 100)], 170, 0, {1: 0, 2: 50},
     [(1, 100), (2, 50)]),
    ("list order, not id order", 0, [(9, 100), (3, 100)], 150, 0, {9: 0, 3: 50},
     [(9, 100), (3, 50)]),
    ("an empty bonus is skipped", 0, [(1, 0), (2, 100)], 60, 0, {1: 0, 2: 40}, [(2, 60)]),
    ("everything the wallet holds", 100, [(1, 100), (2, 100)], 300, 0, {1: 0, 2: 0},
     [(1, 100), (2, 100)]),
]


@pytest.mark.parametrize(("case", "cash", "bonuses", "amount", "cash_after", "balances_after",
                          "debits"), BET_SPLITS, ids=[c[0] for c in BET_SPLITS])
def test_bet_spends_cash_first_then_oldest_bonus(
        case: str, cash: int, bonuses: list[tuple[int, int]], amount: int, cash_after: int,
        balances_after: dict[int, int], debits: list[tuple[int, int]]) -> None:
    """A bet takes cash first, then bonus funds from the oldest active bonus onward."""
    d = make_draft(cash, bonuses=bonus_balances(bonuses))
    record = rules.bet(d, bet_cmd(amount), T0)
    d.check_invariants()
    bonus_part = amount - (cash - cash_after)
    assert (record.cash_minor, record.bonus_minor, record.bonus_debits) == (
        cash - cash_after, bonus_part, debits), case
    assert d.cash == cash_after
    assert {b.bonus_id: b.balance_minor for b in d.bonuses} == balances_after
    assert d.bonus == sum(balances_after.values())
    expected = {HOUSE: amount, CASH: -(cash - cash_after), BONUS: -bonus_part}
    assert net(d.postings()) == {a: m for a, m in expected.items() if m}


def test_bet_ignores_bonuses_no_longer_active() -> None:
    """A converted bonus listed first is neither spent nor wagered on: the next one is."""
    converted = make_bonus(1, 0, state="converted", required_minor=10, wagered_minor=10)
    d = make_draft(0, bonuses=[converted, make_bonus(2, 100)])
    record = rules.bet(d, bet_cmd(60), T0)
    assert (record.bonus_debits, record.wagered) == ([(2, 60)], [(2, 60)])
    assert bonus_view(d) == {1: ("converted", 0, 10), 2: ("active", 40, 60)}
    assert d.changed_bonus_ids == {2}


# (case, cash, bonuses (id, balance), reserved, bet)
INSUFFICIENT = [
    ("cash short by one", 100, [], 0, 101),
    ("cash plus bonus short by one", 100, [(1, 30), (2, 20)], 0, 151),
    ("empty wallet", 0, [], 0, 1),
    ("reserved funds are not spendable", 0, [], 500, 1),
]


@pytest.mark.parametrize(("case", "cash", "bonuses", "reserved", "amount"), INSUFFICIENT,
                         ids=[c[0] for c in INSUFFICIENT])
def test_bet_above_cash_plus_bonus_is_refused_and_moves_nothing(
        case: str, cash: int, bonuses: list[tuple[int, int]], reserved: int,
        amount: int) -> None:
    """cash + bonus < stake: INSUFFICIENT_FUNDS, with no posting and no bucket changed."""
    d = make_draft(cash, bonuses=bonus_balances(bonuses), reserved=reserved)
    before = snapshot(d)
    with pytest.raises(Rejected) as err:
        rules.bet(d, bet_cmd(amount), T0)
    assert err.value.reason == errors.INSUFFICIENT_FUNDS, case
    assert snapshot(d) == before
    assert d.postings() == []
    assert d.changed_bonus_ids == set()


@pytest.mark.parametrize("cash", [-1, -500], ids=["debt of 1", "debt of 500"])
def test_bet_in_debt_is_refused_even_with_bonus_funds(cash: int) -> None:
    """cash < 0 (after a chargeback): any bet is WALLET_BLOCKED, bonus funds or not."""
    d = make_draft(cash, bonuses=bonus_balances([(1, 1_000)]))
    before = snapshot(d)
    with pytest.raises(Rejected) as err:
        rules.bet(d, bet_cmd(1), T0)
    assert err.value.reason == errors.WALLET_BLOCKED
    assert snapshot(d) == before
    assert d.postings() == []


def test_bet_expires_due_bonuses_before_spending() -> None:
    """A bonus due at the bet's time goes to the pool first; the bet spends the next one."""
    due = make_bonus(1, 200, expires_at=T0)  # due exactly now
    d = make_draft(100, bonuses=[due, make_bonus(2, 50)])
    record = rules.bet(d, bet_cmd(120), T0)
    d.check_invariants()
    assert (record.cash_minor, record.bonus_minor, record.bonus_debits) == (100, 20, [(2, 20)])
    assert bonus_view(d) == {1: ("expired", 0, 0), 2: ("active", 30, 120)}
    assert (d.cash, d.bonus) == (0, 30)
    assert net(d.postings()) == {BONUS_POOL: 200, HOUSE: 120, CASH: -100, BONUS: -220}


def test_bet_made_short_by_expiry_is_refused_and_the_fork_is_discarded() -> None:
    """Expiry runs before the funds check, so the refused fork moved money; the wallet it
    was forked from is untouched (why each operation runs on a fork)."""
    wallet = make_draft(0, bonuses=[make_bonus(1, 200, expires_at=T0)])
    before = snapshot(wallet)
    work = wallet.fork()
    with pytest.raises(Rejected) as err:
        rules.bet(work, bet_cmd(100), T0)
    assert err.value.reason == errors.INSUFFICIENT_FUNDS
    assert net(work.postings()) == {BONUS: -200, BONUS_POOL: 200}
    assert snapshot(wallet) == before


# -- wins -------------------------------------------------------------------------------------

# (case, win, stake as (cash, bonus) or None, expected (cash, bonus))
WIN_SPLITS = [
    ("no stake known", 100, None, (100, 0)),
    ("zero stake", 100, (0, 0), (100, 0)),
    ("cash stake only", 100, (300, 0), (100, 0)),
    ("bonus stake only", 100, (0, 300), (0, 100)),
    ("half and half", 100, (50, 50), (50, 50)),
    ("a third cash: remainder to bonus", 100, (1, 2), (33, 67)),
    ("two thirds cash: remainder to bonus", 100, (2, 1), (66, 34)),
    ("one unit, half staked each way", 1, (1, 1), (0, 1)),
    ("odd win, even stake", 7, (3, 3), (3, 4)),
    ("large exact", 10**11, (10**11 - 1, 1), (10**11 - 1, 1)),
]


@pytest.mark.parametrize(("case", "amount", "stake", "expected"), WIN_SPLITS,
                         ids=[c[0] for c in WIN_SPLITS])
def test_win_split_is_proportional_with_the_remainder_to_bonus(
        case: str, amount: int, stake: tuple[int, int] | None,
        expected: tuple[int, int]) -> None:
    """win_split pays cash in proportion to the cash stake, rounded down; bonus gets the rest."""
    got = rules.win_split(amount, RoundStake(*stake) if stake is not None else None)
    assert got == expected, case
    assert sum(got) == amount


# (case, cash, active bonuses (id, balance), stake, win, fields (cash, bonus), cash after,
#  {bonus id: balance after})
WINS = [
    ("no stake: all cash", 0, [(1, 50)], None, 100, (100, 0), 100, {1: 50}),
    ("cash stake: all cash", 0, [(1, 50)], (10, 0), 100, (100, 0), 100, {1: 50}),
    ("half bonus stake", 0, [(1, 50)], (50, 50), 100, (50, 50), 50, {1: 100}),
    ("bonus share to the oldest active bonus", 0, [(1, 0), (2, 50)], (1, 2), 100, (33, 67),
     33, {1: 67, 2: 50}),
    ("no active bonus: the whole win is cash", 0, [], (0, 100), 100, (100, 0), 100, {}),
    ("in debt: the win still credits cash", -50, [], None, 100, (100, 0), 50, {}),
]


@pytest.mark.parametrize(("case", "cash", "bonuses", "stake", "amount", "fields", "cash_after",
                          "balances_after"), WINS, ids=[c[0] for c in WINS])
def test_win_credits_cash_and_the_oldest_active_bonus(
        case: str, cash: int, bonuses: list[tuple[int, int]], stake: tuple[int, int] | None,
        amount: int, fields: tuple[int, int], cash_after: int,
        balances_after: dict[int, int]) -> None:
    """A win is split by its round's stake; the bonus share goes to the oldest active bonus."""
    d = make_draft(cash, bonuses=bonus_balances(bonuses))
    got = rules.win(d, win_cmd(amount), RoundStake(*stake) if stake else None, T0)
    d.check_invariants()
    assert got == {"cash_minor": fields[0], "bonus_minor": fields[1]}, case
    assert d.cash == cash_after
    assert {b.bonus_id: b.balance_minor for b in d.bonuses} == balances_after
    expected = {HOUSE: -amount, CASH: fields[0], BONUS: fields[1]}
    assert net(d.postings()) == {a: m for a, m in expected.items() if m}


@pytest.mark.parametrize("state", ["forfeited", "converted", "expired"])
def test_win_with_bonus_stake_but_no_active_bonus_is_all_cash(state: str) -> None:
    """The bonus that staked the round has ended: its share of the win is paid as cash."""
    d = make_draft(0, bonuses=[make_bonus(1, 0, state=state)])
    got = rules.win(d, win_cmd(90), RoundStake(0, 30), T0)
    assert got == {"cash_minor": 90, "bonus_minor": 0}
    assert net(d.postings()) == {HOUSE: -90, CASH: 90}
    assert bonus_view(d) == {1: (state, 0, 0)}


def test_win_expires_a_due_bonus_first_and_pays_its_share_in_cash() -> None:
    """The only bonus is due at the win: it goes to the pool and the whole win is cash."""
    d = make_draft(0, bonuses=[make_bonus(1, 40, expires_at=T0 - timedelta(seconds=1))])
    got = rules.win(d, win_cmd(100), RoundStake(0, 10), T0)
    d.check_invariants()
    assert got == {"cash_minor": 100, "bonus_minor": 0}
    assert net(d.postings()) == {HOUSE: -100, CASH: 100, BONUS: -40, BONUS_POOL: 40}


# -- rollback ---------------------------------------------------------------------------------

# (case, cash, active bonuses as (id, balance, wagered), bet): no requirement is met.
EXACT_ROLLBACKS = [
    ("cash only, wagering counted", 500, [(1, 100, 0)], 300),
    ("cash and bonus", 100, [(1, 200, 10)], 250),
    ("two bonuses", 20, [(1, 100, 0), (2, 100, 5)], 170),
    ("no bonus at all", 300, [], 300),
]


@pytest.mark.parametrize(("case", "cash", "bonuses", "amount"), EXACT_ROLLBACKS,
                         ids=[c[0] for c in EXACT_ROLLBACKS])
def test_rollback_reverses_a_bet_exactly_while_its_bonuses_stay_active(
        case: str, cash: int, bonuses: list[tuple[int, int, int]], amount: int) -> None:
    """Bet then rollback: every bucket, bonus balance and wagered total is as before, and
    the rollback's postings are the bet's negated."""
    wallet = make_draft(cash, bonuses=[make_bonus(i, bal, wagered_minor=w)
                                       for i, bal, w in bonuses])
    before = snapshot(wallet)
    wallet, record, bet_postings = step(wallet, lambda d: rules.bet(d, bet_cmd(amount), T0))
    wallet, got, back_postings = step(
        wallet, lambda d: rules.rollback(d, rollback_cmd(), record, T0))
    assert snapshot(wallet) == before, case
    assert got == {"outcome": "reversed", "cash_minor": record.cash_minor,
                   "bonus_minor": record.bonus_minor}
    assert net(back_postings) == {a: -m for a, m in net(bet_postings).items()}


def test_rollback_returns_bonus_funds_as_cash_once_the_bonus_converted() -> None:
    """A bet's bonus debit comes back as cash when that bonus has converted since; the
    converted bonus keeps its wagering."""
    wallet = make_draft(0, bonuses=[make_bonus(1, 200, required_minor=300)])
    wallet, bet_a, _ = step(wallet, lambda d: rules.bet(d, bet_cmd(150, key="a"), T0))
    assert (bet_a.cash_minor, bet_a.bonus_debits) == (0, [(1, 150)])
    wallet, _, _ = step(wallet, lambda d: rules.deposit(d, deposit_cmd(1_000)))
    # the second bet meets the requirement: the 50 left converts to cash
    wallet, _, _ = step(wallet, lambda d: rules.bet(d, bet_cmd(150, key="b"), T0))
    assert (wallet.cash, wallet.bonus) == (900, 0)
    wallet, _, postings = step(wallet, lambda d: rules.rollback(d, rollback_cmd("a"), bet_a, T0))
    assert (wallet.cash, wallet.bonus, wallet.reserved) == (1_050, 0, 0)
    assert bonus_view(wallet) == {1: ("converted", 0, 300)}
    assert net(postings) == {HOUSE: -150, CASH: 150}


def test_rollback_sends_funds_of_a_forfeited_bonus_to_the_pool() -> None:
    """The player never keeps funds of a bonus taken back: they go to the bonus pool."""
    wallet = make_draft(0, bonuses=[make_bonus(1, 200)])
    wallet, record, _ = step(wallet, lambda d: rules.bet(d, bet_cmd(150), T0))
    wallet, got, _ = step(wallet, lambda d: rules.forfeit_bonus(d, 1, T0))
    assert got == {"forfeited_minor": 50}
    wallet, _, postings = step(wallet, lambda d: rules.rollback(d, rollback_cmd(), record, T0))
    assert (wallet.cash, wallet.bonus) == (0, 0)
    assert net(postings) == {HOUSE: -150, BONUS_POOL: 150}
    assert bonus_view(wallet) == {1: ("forfeited", 0, 150)}


def test_rollback_after_expiry_expires_the_bonus_then_pays_the_pool() -> None:
    """A bonus due at the rollback's time is expired by it; its debits go to the pool."""
    wallet = make_draft(0, bonuses=[make_bonus(1, 200, expires_at=T0 + timedelta(hours=1))])
    wallet, record, _ = step(wallet, lambda d: rules.bet(d, bet_cmd(150), T0))
    later = T0 + timedelta(hours=2)
    wallet, _, postings = step(wallet,
                               lambda d: rules.rollback(d, rollback_cmd(), record, later))
    assert (wallet.cash, wallet.bonus) == (0, 0)
    assert net(postings) == {HOUSE: -150, BONUS: -50, BONUS_POOL: 200}
    assert bonus_view(wallet) == {1: ("expired", 0, 150)}


def test_rollback_splits_each_debit_by_what_became_of_its_bonus() -> None:
    """Cash back to cash, a forfeited bonus's debit to the pool, an active one's to it."""
    wallet = make_draft(50, bonuses=bonus_balances([(1, 100), (2, 100)]))
    wallet, record, _ = step(wallet, lambda d: rules.bet(d, bet_cmd(200), T0))
    assert (record.cash_minor, record.bonus_debits, record.wagered) == (
        50, [(1, 100), (2, 50)], [(1, 200)])
    wallet, _, _ = step(wallet, lambda d: rules.forfeit_bonus(d, 1, T0))
    wallet, _, postings = step(wallet, lambda d: rules.rollback(d, rollback_cmd(), record, T0))
    assert (wallet.cash, wallet.bonus) == (50, 100)
    assert bonus_view(wallet) == {1: ("forfeited", 0, 200), 2: ("active", 100, 0)}
    assert net(postings) == {HOUSE: -200, CASH: 50, BONUS: 50, BONUS_POOL: 100}


def test_rollback_in_debt_still_credits() -> None:
    """A rollback only credits the player, so debt does not block it."""
    wallet = make_draft(100)
    wallet, record, _ = step(wallet, lambda d: rules.bet(d, bet_cmd(100), T0))
    wallet, _, _ = step(wallet, lambda d: rules.chargeback(d, chargeback_cmd(30)))
    wallet, _, _ = step(wallet, lambda d: rules.rollback(d, rollback_cmd(), record, T0))
    assert wallet.balances().cash == 70


# -- deposits, withdrawals --------------------------------------------------------------------

def test_deposit_credits_cash_from_the_psp_clearing_account() -> None:
    """A plain deposit: psp:<psp> -amount, cash +amount."""
    d = make_draft(5)
    assert rules.deposit(d, deposit_cmd(100)) == {}
    d.check_invariants()
    assert d.balances() == Balances(105, 0, 0)
    assert d.postings() == [Posting(CASH, 100), Posting(PSP_CLEARING, -100)]  # by account


def test_converted_deposit_balances_in_each_currency() -> None:
    """0.0015 BTC credited as 88.65 EUR: the BTC goes psp -> fx:BTC, the EUR fx:EUR -> cash,
    and each currency's postings sum to zero on their own."""
    d = make_draft(0)
    rules.deposit(d, deposit_cmd(8_865, conversion=conversion(150_000)))
    d.check_invariants()
    assert (d.cash, d.bonus, d.reserved) == (8_865, 0, 0)
    assert d.postings() == [
        Posting(fx_account("EUR"), -8_865), Posting(CASH, 8_865),
        Posting(fx_account("BTC"), 150_000, "BTC"), Posting(PSP_CLEARING, -150_000, "BTC")]
    assert sums_by_currency(d.postings()) == {None: 0, "BTC": 0}


def test_reserve_moves_cash_to_reserved() -> None:
    """Reserving a withdrawal holds cash in the reserved bucket."""
    d = make_draft(150)
    rules.reserve_withdrawal(d, reserve_cmd(100))
    assert (d.cash, d.bonus, d.reserved) == (50, 0, 100)
    assert net(d.postings()) == {CASH: -100, RESERVED: 100}


# (case, cash, active bonuses, amount, reason)
RESERVE_REFUSALS = [
    ("more than the cash", 150, [], 151, errors.INSUFFICIENT_FUNDS),
    ("bonus funds are not withdrawable", 100, [(1, 500)], 101, errors.INSUFFICIENT_FUNDS),
    ("in debt", -1, [], 1, errors.WALLET_BLOCKED),
    ("in debt, with bonus funds", -1, [(1, 500)], 1, errors.WALLET_BLOCKED),
]


@pytest.mark.parametrize(("case", "cash", "bonuses", "amount", "reason"), RESERVE_REFUSALS,
                         ids=[c[0] for c in RESERVE_REFUSALS])
def test_reserve_refusals_move_nothing(case: str, cash: int, bonuses: list[tuple[int, int]],
                                       amount: int, reason: str) -> None:
    """Only withdrawable cash can be reserved, and never while in debt."""
    d = make_draft(cash, bonuses=bonus_balances(bonuses))
    before = snapshot(d)
    with pytest.raises(Rejected) as err:
        rules.reserve_withdrawal(d, reserve_cmd(amount))
    assert err.value.reason == reason, case
    assert snapshot(d) == before
    assert d.postings() == []


# (case, rule on a wallet with cash 20 and 100 reserved, buckets after, postings)
WITHDRAWAL_ENDS: list[tuple[str, Callable[[Draft], Any], tuple[int, int, int],
                            dict[str, int]]] = [
    ("commit pays the PSP from reserved",
     lambda d: rules.commit_withdrawal(d, 100, PSP), (20, 0, 0),
     {RESERVED: -100, PSP_CLEARING: 100}),
    ("cancel returns reserved to cash",
     lambda d: rules.cancel_withdrawal(d, 100), (120, 0, 0), {RESERVED: -100, CASH: 100}),
    ("reverse brings a paid-out amount back to cash",
     lambda d: rules.reverse_withdrawal(d, 100, PSP), (120, 0, 100),
     {PSP_CLEARING: -100, CASH: 100}),
]


@pytest.mark.parametrize(("case", "rule", "buckets", "postings"), WITHDRAWAL_ENDS,
                         ids=[c[0] for c in WITHDRAWAL_ENDS])
def test_withdrawal_commit_cancel_reverse(case: str, rule: Callable[[Draft], Any],
                                          buckets: tuple[int, int, int],
                                          postings: dict[str, int]) -> None:
    """Each end of a withdrawal moves exactly its amount between the right accounts."""
    d = make_draft(20, reserved=100)
    assert rule(d) == {}
    d.check_invariants()
    assert (d.cash, d.bonus, d.reserved) == buckets, case
    assert net(d.postings()) == postings


# -- chargeback and debt ----------------------------------------------------------------------

def test_chargeback_may_take_cash_below_zero_and_leaves_bonus_alone() -> None:
    """A chargeback larger than the cash leaves the wallet in debt; nothing is available."""
    d = make_draft(100, bonuses=bonus_balances([(1, 200)]))
    assert rules.chargeback(d, chargeback_cmd(150)) == {}
    d.check_invariants()  # negative cash is not a broken invariant
    assert (d.cash, d.bonus, d.reserved) == (-50, 200, 0)
    assert d.balances().available == 0
    assert net(d.postings()) == {CASH: -150, chargeback_account(PSP): 150}


# (case, rule on a wallet in debt: cash -50 after a chargeback, 30 reserved, a bonus of 200;
#  the reason it is refused with, or the cash after)
IN_DEBT: list[tuple[str, Callable[[Draft], Any], str | int]] = [
    ("bet refused", lambda d: rules.bet(d, bet_cmd(1), T0), errors.WALLET_BLOCKED),
    ("reserve refused", lambda d: rules.reserve_withdrawal(d, reserve_cmd(1)),
     errors.WALLET_BLOCKED),
    ("cash debit refused", lambda d: rules.adjust(d, adjust_cmd(Bucket.CASH, -1), T0),
     errors.INSUFFICIENT_FUNDS),
    ("deposit credits", lambda d: rules.deposit(d, deposit_cmd(30)), -20),
    ("reversed withdrawal credits", lambda d: rules.reverse_withdrawal(d, 30, PSP), -20),
    ("cancelled withdrawal credits", lambda d: rules.cancel_withdrawal(d, 30), -20),
    ("win credits", lambda d: rules.win(d, win_cmd(30), None, T0), -20),
    ("cash credit adjustment", lambda d: rules.adjust(d, adjust_cmd(Bucket.CASH, 30), T0), -20),
    ("deposit covering the debt", lambda d: rules.deposit(d, deposit_cmd(80)), 30),
]


@pytest.mark.parametrize(("case", "rule", "outcome"), IN_DEBT, ids=[c[0] for c in IN_DEBT])
def test_debt_refuses_spending_and_accepts_credits(case: str, rule: Callable[[Draft], Any],
                                                   outcome: str | int) -> None:
    """After a chargeback into debt, bets and withdrawals are WALLET_BLOCKED; credits work."""
    wallet = make_draft(100, bonuses=bonus_balances([(1, 200)]), reserved=30)
    wallet, _, _ = step(wallet, lambda d: rules.chargeback(d, chargeback_cmd(150)))
    assert wallet.balances().available == 0
    work = wallet.fork()
    if isinstance(outcome, str):
        with pytest.raises(Rejected) as err:
            rule(work)
        assert err.value.reason == outcome, case
        assert work.postings() == []
        return
    rule(work)
    work.check_invariants()
    assert work.cash == outcome, case
    assert work.bonus == 200


# -- adjustments ------------------------------------------------------------------------------

# (case, cash, active bonuses, bucket, signed amount, cash after, {bonus: balance after},
#  postings, result fields)
ADJUSTS: list[tuple[str, int, list[tuple[int, int]], Bucket, int, int, dict[int, int],
                    dict[str, int], dict[str, str]]] = [
    ("cash credit", 50, [], Bucket.CASH, 100, 150, {}, {ADJUSTMENTS: -100, CASH: 100}, {}),
    ("cash debit of all of it", 50, [], Bucket.CASH, -50, 0, {},
     {CASH: -50, ADJUSTMENTS: 50}, {}),
    ("bonus credit to the oldest", 0, [(1, 100), (2, 100)], Bucket.BONUS, 30, 0,
     {1: 130, 2: 100}, {ADJUSTMENTS: -30, BONUS: 30}, {"bonus_id": "1"}),
    ("bonus debit of all the oldest holds", 0, [(1, 100), (2, 100)], Bucket.BONUS, -100, 0,
     {1: 0, 2: 100}, {BONUS: -100, ADJUSTMENTS: 100}, {"bonus_id": "1"}),
]


@pytest.mark.parametrize(("case", "cash", "bonuses", "bucket", "amount", "cash_after",
                          "balances_after", "postings", "fields"), ADJUSTS,
                         ids=[c[0] for c in ADJUSTS])
def test_adjust_moves_the_signed_amount(case: str, cash: int, bonuses: list[tuple[int, int]],
                                        bucket: Bucket, amount: int, cash_after: int,
                                        balances_after: dict[int, int],
                                        postings: dict[str, int],
                                        fields: dict[str, str]) -> None:
    """A support adjustment credits or debits cash, or the oldest active bonus."""
    d = make_draft(cash, bonuses=bonus_balances(bonuses))
    assert rules.adjust(d, adjust_cmd(bucket, amount), T0) == fields, case
    d.check_invariants()
    assert d.cash == cash_after
    assert {b.bonus_id: b.balance_minor for b in d.bonuses} == balances_after
    assert all(b.active for b in d.bonuses), "a bonus debited to zero stays active"
    assert net(d.postings()) == postings


# (case, cash, the wallet's bonuses, bucket, signed amount, reason)
ADJUST_REFUSALS: list[tuple[str, int, Callable[[], list[BonusState]], Bucket, int, str]] = [
    ("cash debit above the cash", 50, lambda: [make_bonus(1, 500)], Bucket.CASH, -51,
     errors.INSUFFICIENT_FUNDS),
    ("cash debit in debt", -10, lambda: [], Bucket.CASH, -1, errors.INSUFFICIENT_FUNDS),
    ("bonus debit above the oldest bonus", 0,
     lambda: [make_bonus(1, 100), make_bonus(2, 100)], Bucket.BONUS, -101,
     errors.INSUFFICIENT_FUNDS),
    ("bonus credit with no bonus", 0, lambda: [], Bucket.BONUS, 10, errors.NO_ACTIVE_BONUS),
    ("bonus credit with only a converted one", 0,
     lambda: [make_bonus(1, 0, state="converted")], Bucket.BONUS, 10,
     errors.NO_ACTIVE_BONUS),
    ("bonus credit with only a due one", 0, lambda: [make_bonus(1, 40, expires_at=T0)],
     Bucket.BONUS, 10, errors.NO_ACTIVE_BONUS),
]


@pytest.mark.parametrize(("case", "cash", "bonuses", "bucket", "amount", "reason"),
                         ADJUST_REFUSALS, ids=[c[0] for c in ADJUST_REFUSALS])
def test_adjust_refusals_leave_the_wallet_unchanged(
        case: str, cash: int, bonuses: Callable[[], list[BonusState]], bucket: Bucket,
        amount: int, reason: str) -> None:
    """A debit beyond what its target holds, or a bonus adjustment with no active bonus, is
    refused; the wallet it was forked from is unchanged."""
    wallet = make_draft(cash, bonuses=bonuses())
    before = snapshot(wallet)
    with pytest.raises(Rejected) as err:
        rules.adjust(wallet.fork(), adjust_cmd(bucket, amount), T0)
    assert err.value.reason == reason, case
    assert snapshot(wallet) == before
