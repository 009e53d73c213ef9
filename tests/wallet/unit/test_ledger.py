"""The Draft and its postings (wallet_core.domain.ledger): balanced moves, the balance limit,
the invariant check that runs before anything is written, account names, what a balance
makes available, and how a draft is forked, settled and stripped of its bonuses between the
operations of one batch."""

from __future__ import annotations

import pytest

from tests.wallet.unit.drafts import (
    BONUS,
    CASH,
    HOUSE,
    PSP_CLEARING,
    RESERVED,
    T0,
    WALLET_ID,
    bet_cmd,
    bonus_balances,
    deposit_cmd,
    make_bonus,
    make_draft,
    snapshot,
    sums_by_currency,
)
from wallet_core.domain import errors, rules
from wallet_core.domain.errors import Rejected
from wallet_core.domain.ledger import (
    ADJUSTMENTS,
    Balances,
    Bucket,
    Draft,
    Posting,
    chargeback_account,
    fx_account,
    house_account,
    player_account,
    psp_account,
)
from wallet_core.domain.money import BALANCE_MAX_MINOR

# -- accounts and balances --------------------------------------------------------------------

ACCOUNT_NAMES = [
    (player_account(7, Bucket.CASH), "player:7:cash"),
    (player_account(7, Bucket.BONUS), "player:7:bonus"),
    (player_account(7, Bucket.RESERVED), "player:7:reserved"),
    (house_account("slots"), "house:slots"),
    (psp_account("acme"), "psp:acme"),
    (chargeback_account("acme"), "chargebacks:acme"),
    (fx_account("BTC"), "fx:BTC"),
]


@pytest.mark.parametrize(("got", "expected"), ACCOUNT_NAMES, ids=[e for _, e in ACCOUNT_NAMES])
def test_account_names(got: str, expected: str) -> None:
    """Account names are the stable strings the journal and the checker rely on."""
    assert got == expected


# (case, cash, bonus, reserved, available)
AVAILABLE = [
    ("cash and bonus", 100, 50, 0, 150),
    ("bonus only", 0, 50, 0, 50),
    ("reserved is not available", 10, 0, 500, 10),
    ("empty", 0, 0, 0, 0),
    ("in debt by one", -1, 50, 0, 0),
    ("in debt, with reserved", -100, 500, 500, 0),
]


@pytest.mark.parametrize(("case", "cash", "bonus", "reserved", "available"), AVAILABLE,
                         ids=[c[0] for c in AVAILABLE])
def test_available_is_cash_plus_bonus_and_nothing_in_debt(case: str, cash: int, bonus: int,
                                                          reserved: int,
                                                          available: int) -> None:
    """Balances.available: cash + bonus, or 0 while cash is negative."""
    assert Balances(cash, bonus, reserved).available == available, case


# -- moves and postings -----------------------------------------------------------------------

def test_moves_post_both_sides_and_sum_to_zero() -> None:
    """Each move debits one account and credits another: the postings sum to zero and are
    netted per account, sorted by account."""
    d = make_draft(100)
    d.move(30, source=Bucket.CASH, dest=HOUSE)
    d.move(20, source=HOUSE, dest=Bucket.CASH)
    d.move(5, source=Bucket.CASH, dest=Bucket.RESERVED)
    d.move(7, source=ADJUSTMENTS, dest=Bucket.BONUS)
    assert (d.cash, d.bonus, d.reserved) == (85, 7, 5)
    assert d.postings() == [Posting(ADJUSTMENTS, -7), Posting(HOUSE, 10), Posting(BONUS, 7),
                            Posting(CASH, -15), Posting(RESERVED, 5)]
    assert sums_by_currency(d.postings()) == {None: 0}


def test_moves_that_cancel_out_leave_no_posting() -> None:
    """An account whose moves net to zero gets no posting at all."""
    d = make_draft(100)
    d.move(40, source=Bucket.CASH, dest=HOUSE)
    d.move(40, source=HOUSE, dest=Bucket.CASH)
    assert d.postings() == []
    assert d.cash == 100


def test_a_move_of_zero_posts_nothing() -> None:
    """move(0) changes no bucket and leaves no posting (not even a zero one)."""
    d = make_draft(100)
    d.move(0, source=Bucket.CASH, dest=HOUSE)
    assert d.postings() == []
    assert snapshot(d) == snapshot(make_draft(100))


@pytest.mark.parametrize("amount", [-1, -(2**62)])
def test_a_negative_move_is_a_bug(amount: int) -> None:
    """A negative amount is a broken invariant (AssertionError), and nothing moves."""
    d = make_draft(100)
    with pytest.raises(AssertionError):
        d.move(amount, source=Bucket.CASH, dest=HOUSE)
    assert d.postings() == []
    assert d.cash == 100


FOREIGN_MISUSE = [
    ("zero", 0, PSP_CLEARING, fx_account("BTC")),
    ("negative", -5, PSP_CLEARING, fx_account("BTC")),
    ("into a player bucket", 5, PSP_CLEARING, CASH),
    ("out of a player bucket", 5, CASH, fx_account("BTC")),
]


@pytest.mark.parametrize(("case", "amount", "source", "dest"), FOREIGN_MISUSE,
                         ids=[c[0] for c in FOREIGN_MISUSE])
def test_foreign_moves_are_positive_and_between_system_accounts(case: str, amount: int,
                                                                source: str,
                                                                dest: str) -> None:
    """A move in another currency is positive and never touches a player bucket (a bug:
    AssertionError, which aborts the whole transaction; the draft is not used again)."""
    d = make_draft(100)
    with pytest.raises(AssertionError):
        d.move_foreign(amount, currency="BTC", source=source, dest=dest)
    assert d.cash == 100, case


def test_foreign_postings_come_after_the_wallets_own_and_carry_their_currency() -> None:
    """Foreign moves net per (account, currency), listed after the wallet-currency postings."""
    d = make_draft(0)
    d.move_foreign(10, currency="BTC", source=PSP_CLEARING, dest=fx_account("BTC"))
    d.move_foreign(3, currency="USDT", source=PSP_CLEARING, dest=fx_account("USDT"))
    d.move_foreign(10, currency="BTC", source=PSP_CLEARING, dest=fx_account("BTC"))
    d.move(4, source=fx_account("EUR"), dest=Bucket.CASH)
    assert d.postings() == [
        Posting(fx_account("EUR"), -4), Posting(CASH, 4),
        Posting(fx_account("BTC"), 20, "BTC"), Posting(fx_account("USDT"), 3, "USDT"),
        Posting(PSP_CLEARING, -20, "BTC"), Posting(PSP_CLEARING, -3, "USDT")]
    assert sums_by_currency(d.postings()) == {None: 0, "BTC": 0, "USDT": 0}
    assert d.cash == 4


# -- the balance limit ------------------------------------------------------------------------

@pytest.mark.parametrize("bucket", list(Bucket), ids=[b.value for b in Bucket])
@pytest.mark.parametrize(("amount", "accepted"), [(10, True), (11, False)],
                         ids=["up to the limit", "one past it"])
def test_no_bucket_goes_past_the_balance_limit(bucket: Bucket, amount: int,
                                               accepted: bool) -> None:
    """A credit that takes a bucket past BALANCE_MAX_MINOR is BALANCE_LIMIT_EXCEEDED."""
    d = Draft(wallet_id=WALLET_ID, player_id="p", cash=0, bonus=0, reserved=0,
              bonuses_loaded=False)
    setattr(d, bucket.value, BALANCE_MAX_MINOR - 10)
    if accepted:
        d.move(amount, source=ADJUSTMENTS, dest=bucket)
        assert getattr(d, bucket.value) == BALANCE_MAX_MINOR
        return
    with pytest.raises(Rejected) as err:
        d.move(amount, source=ADJUSTMENTS, dest=bucket)
    assert err.value.reason == errors.BALANCE_LIMIT_EXCEEDED
    assert getattr(d, bucket.value) == BALANCE_MAX_MINOR - 10


def test_a_deposit_past_the_limit_is_refused() -> None:
    """Through a rule: a deposit that would take cash past the limit is refused."""
    d = make_draft(BALANCE_MAX_MINOR - 99)
    with pytest.raises(Rejected) as err:
        rules.deposit(d, deposit_cmd(100))
    assert err.value.reason == errors.BALANCE_LIMIT_EXCEEDED
    assert d.cash == BALANCE_MAX_MINOR - 99


# -- check_invariants -------------------------------------------------------------------------

def test_invariants_hold_for_a_consistent_draft_even_in_debt() -> None:
    """Negative cash is allowed (debt); a bonus bucket equal to its bonuses passes."""
    d = make_draft(-50, bonuses=bonus_balances([(1, 30), (2, 20)]), reserved=5)
    d.bonuses.append(make_bonus(3, 0, state="converted"))
    d.check_invariants()


# (case, cash, bonus bucket, reserved, active bonus balances)
BROKEN = [
    ("bonus bucket above its bonuses", 0, 60, 0, [(1, 50)]),
    ("bonus bucket below its bonuses", 0, 40, 0, [(1, 50)]),
    ("bonus bucket with no bonus", 0, 10, 0, []),
    ("negative bonus bucket", 0, -1, 0, []),
    ("negative reserved", 0, 0, -1, []),
]


@pytest.mark.parametrize(("case", "cash", "bonus", "reserved", "bonuses"), BROKEN,
                         ids=[c[0] for c in BROKEN])
def test_invariants_catch_inconsistent_buckets(case: str, cash: int, bonus: int,
                                               reserved: int,
                                               bonuses: list[tuple[int, int]]) -> None:
    """A bonus bucket that does not match its active bonuses, or a negative bonus or
    reserved bucket, is an AssertionError before anything is written."""
    d = Draft(wallet_id=WALLET_ID, player_id="p", cash=cash, bonus=bonus, reserved=reserved,
              bonuses=bonus_balances(bonuses))
    with pytest.raises(AssertionError):
        d.check_invariants()


def test_invariants_skip_the_bonus_match_when_bonuses_were_not_loaded() -> None:
    """A draft without its bonuses cannot compare the bucket with them, and does not."""
    Draft(wallet_id=WALLET_ID, player_id="p", cash=0, bonus=10, reserved=0,
          bonuses_loaded=False).check_invariants()


def test_invariants_catch_unbalanced_postings() -> None:
    """Postings that do not sum to zero (here forced past move()) are an AssertionError."""
    d = make_draft(0)
    d._apply(HOUSE, 5)  # one side only: what move() never does
    with pytest.raises(AssertionError, match="do not balance"):
        d.check_invariants()


def test_invariants_catch_unbalanced_foreign_postings() -> None:
    """Foreign postings must balance per currency on their own."""
    d = make_draft(0)
    d._foreign[(fx_account("BTC"), "BTC")] = 5
    with pytest.raises(AssertionError, match="BTC"):
        d.check_invariants()


# -- fork, settled, without_bonuses -----------------------------------------------------------

def test_fork_copies_bonuses_so_a_refused_operation_leaves_the_wallet_as_it_was() -> None:
    """A fork has the same buckets and copies of the bonuses: changing them changes nothing
    in the wallet it came from."""
    wallet = make_draft(100, bonuses=bonus_balances([(1, 50)]), reserved=3)
    before = snapshot(wallet)
    work = wallet.fork()
    assert snapshot(work) == before
    assert work.bonuses_loaded and work.postings() == []
    rules.bet(work, bet_cmd(130), T0)
    assert snapshot(wallet) == before
    assert wallet.bonuses[0] is not work.bonuses[0]


def test_only_a_settled_draft_is_forked() -> None:
    """Forking a draft that has moved money is a bug: the moves would be lost."""
    d = make_draft(100)
    d.move(1, source=Bucket.CASH, dest=HOUSE)
    with pytest.raises(AssertionError):
        d.fork()


def test_settled_keeps_the_result_and_drops_the_postings() -> None:
    """settled(): the same buckets and bonuses, no postings or changed ids, forkable."""
    work = make_draft(100, bonuses=bonus_balances([(1, 50)])).fork()
    rules.bet(work, bet_cmd(130), T0)
    after = work.settled()
    assert snapshot(after) == snapshot(work)
    assert (after.postings(), after.changed_bonus_ids) == ([], set())
    assert snapshot(after.fork()) == snapshot(work)


def test_without_bonuses_is_the_wallet_with_no_bonus_list() -> None:
    """without_bonuses(): same buckets, bonuses not loaded (so not checked against the bucket)."""
    wallet = make_draft(100, bonuses=bonus_balances([(1, 50)]), reserved=3)
    bare = wallet.without_bonuses()
    assert (bare.cash, bare.bonus, bare.reserved) == (100, 50, 3)
    assert (bare.bonuses, bare.bonuses_loaded) == ([], False)
    bare.check_invariants()


def test_without_bonuses_refuses_a_used_draft() -> None:
    """A draft that has moved money is never reused, with or without its bonuses."""
    d = make_draft(100)
    d.move(1, source=Bucket.CASH, dest=HOUSE)
    with pytest.raises(AssertionError):
        d.without_bonuses()


def test_settled_without_bonuses_takes_them_from_the_draft_before() -> None:
    """An operation that did not load bonuses settles with the previous draft's bonuses and
    its own buckets, so the next bonus operation in the batch sees both."""
    wallet = make_draft(100, bonuses=bonus_balances([(1, 50)]))
    bare = wallet.without_bonuses()
    rules.deposit(bare, deposit_cmd(25))
    after = bare.settled(bonuses_from=wallet)
    assert (after.cash, after.bonus, after.bonuses_loaded) == (125, 50, True)
    assert after.bonuses is wallet.bonuses
    after.check_invariants()


def test_settled_without_bonuses_and_no_draft_before_stays_unloaded() -> None:
    """With no earlier draft to take bonuses from, the settled draft still has none loaded."""
    bare = make_draft(100, bonuses=bonus_balances([(1, 50)])).without_bonuses()
    after = bare.settled()
    assert (after.bonuses, after.bonuses_loaded) == ([], False)


def test_settled_with_bonuses_ignores_bonuses_from() -> None:
    """A draft that loaded its bonuses keeps its own, whatever bonuses_from says."""
    older = make_draft(0, bonuses=bonus_balances([(1, 999)]))
    work = make_draft(100, bonuses=bonus_balances([(2, 50)])).fork()
    after = work.settled(bonuses_from=older)
    assert [b.bonus_id for b in after.bonuses] == [2]

