"""The bonus policy (wallet_core.domain.bonus) and the rules that start and end bonuses:
wagering progress and its carry-over, conversion when a requirement is met (at once when it
is 0), grants, forfeits, expiry, and the building blocks a rollback uses. Each case states the
exact bonus balances, wagered totals, states and postings it expects."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.wallet.unit.drafts import (
    BONUS,
    CASH,
    HOUSE,
    T0,
    bet_cmd,
    bonus_balances,
    bonus_view,
    grant_cmd,
    make_bonus,
    make_draft,
    net,
    new_bonus,
    snapshot,
)
from wallet_core.domain import bonus as bonus_policy
from wallet_core.domain import errors, rules
from wallet_core.domain.errors import Rejected
from wallet_core.domain.ledger import BONUS_POOL

# -- wagering ---------------------------------------------------------------------------------

# (case, cash, bonuses oldest first as (id, balance, required, wagered), bet,
#  wagering counted, {id: (state, balance, wagered)} after, cash after)
WAGERING = [
    ("the cash part of a stake counts", 1_000, [(1, 100, 500, 0)], 200,
     [(1, 200)], {1: ("active", 100, 200)}, 800),
    ("oldest bonus first", 1_000, [(1, 100, 500, 0), (2, 100, 500, 0)], 200,
     [(1, 200)], {1: ("active", 100, 200), 2: ("active", 100, 0)}, 800),
    ("what exceeds the oldest carries to the next", 1_000,
     [(1, 100, 150, 100), (2, 100, 300, 0)], 200,
     [(1, 50), (2, 150)], {1: ("converted", 0, 150), 2: ("active", 100, 150)}, 900),
    ("met exactly: the rest converts", 0, [(1, 300, 200, 0)], 200,
     [(1, 200)], {1: ("converted", 0, 200)}, 100),
    ("beyond every requirement is not counted", 1_000, [(1, 100, 50, 0)], 200,
     [(1, 50)], {1: ("converted", 0, 50)}, 900),
    ("one stake converts two bonuses", 1_000, [(1, 100, 50, 0), (2, 100, 100, 0)], 200,
     [(1, 50), (2, 100)], {1: ("converted", 0, 50), 2: ("converted", 0, 100)}, 1_000),
    ("an emptied active bonus still counts first", 1_000,
     [(1, 0, 500, 0), (2, 100, 500, 0)], 100,
     [(1, 100)], {1: ("active", 0, 100), 2: ("active", 100, 0)}, 900),
    ("one short of the requirement stays active", 1_000, [(1, 100, 201, 0)], 200,
     [(1, 200)], {1: ("active", 100, 200)}, 800),
]


@pytest.mark.parametrize(("case", "cash", "bonuses", "amount", "counted", "after",
                          "cash_after"), WAGERING, ids=[c[0] for c in WAGERING])
def test_whole_stake_counts_toward_wagering_oldest_first(
        case: str, cash: int, bonuses: list[tuple[int, int, int, int]], amount: int,
        counted: list[tuple[int, int]], after: dict[int, tuple[str, int, int]],
        cash_after: int) -> None:
    """A bet's whole stake counts toward wagering, carrying over; a met requirement converts
    the bonus's remaining funds to cash."""
    d = make_draft(cash, bonuses=[make_bonus(i, bal, required_minor=req, wagered_minor=w)
                                  for i, bal, req, w in bonuses])
    record = rules.bet(d, bet_cmd(amount), T0)
    d.check_invariants()
    assert record.wagered == counted, case
    assert bonus_view(d) == after
    assert d.cash == cash_after
    assert d.bonus == sum(bal for _, bal, _ in after.values())
    assert d.changed_bonus_ids >= {i for i, _ in counted}


def test_conversion_posts_bonus_to_cash() -> None:
    """Converting moves the bonus's remaining funds bonus -> cash, in the bet's postings."""
    d = make_draft(1_000, bonuses=[make_bonus(1, 100, required_minor=50)])
    rules.bet(d, bet_cmd(200), T0)
    assert net(d.postings()) == {HOUSE: 200, CASH: -200 + 100, BONUS: -100}


# -- grant ------------------------------------------------------------------------------------

def test_grant_with_a_requirement_adds_an_active_bonus_last() -> None:
    """A grant moves bonus_pool -> bonus and appends the bonus (youngest, spent last)."""
    d = make_draft(10, bonuses=bonus_balances([(1, 40)]))
    c = grant_cmd(100, required_minor=500)
    assert rules.grant_bonus(d, c, new_bonus(2, c, T0), T0) == {}
    d.check_invariants()
    assert (d.cash, d.bonus) == (10, 140)
    assert bonus_view(d) == {1: ("active", 40, 0), 2: ("active", 100, 0)}
    assert [b.bonus_id for b in d.bonuses] == [1, 2]
    assert d.changed_bonus_ids == {2}
    assert net(d.postings()) == {BONUS_POOL: -100, BONUS: 100}


def test_grant_with_requirement_zero_converts_at_once() -> None:
    """Requirement 0: the granted funds are cash at once; the bonus bucket nets to nothing."""
    d = make_draft(10)
    c = grant_cmd(100, required_minor=0)
    rules.grant_bonus(d, c, new_bonus(1, c, T0), T0)
    d.check_invariants()
    assert (d.cash, d.bonus) == (110, 0)
    assert bonus_view(d) == {1: ("converted", 0, 0)}
    assert net(d.postings()) == {BONUS_POOL: -100, CASH: 100}  # bonus +100 -100: no posting


def test_grant_expires_due_bonuses_first() -> None:
    """A bonus due at the grant's time is returned to the pool in the same transaction."""
    d = make_draft(0, bonuses=[make_bonus(1, 50, expires_at=T0)])
    c = grant_cmd(100, required_minor=500)
    rules.grant_bonus(d, c, new_bonus(2, c, T0), T0)
    d.check_invariants()
    assert bonus_view(d) == {1: ("expired", 0, 0), 2: ("active", 100, 0)}
    assert d.bonus == 100
    assert net(d.postings()) == {BONUS_POOL: -50, BONUS: 50}


# -- forfeit and expiry -----------------------------------------------------------------------

def test_forfeit_returns_the_remaining_funds_to_the_pool() -> None:
    """Forfeit: the bonus's balance goes to bonus_pool and it is `forfeited`."""
    d = make_draft(0, bonuses=bonus_balances([(1, 150), (2, 30)]))
    assert rules.forfeit_bonus(d, 1, T0) == {"forfeited_minor": 150}
    d.check_invariants()
    assert bonus_view(d) == {1: ("forfeited", 0, 0), 2: ("active", 30, 0)}
    assert d.bonus == 30
    assert net(d.postings()) == {BONUS: -150, BONUS_POOL: 150}


@pytest.mark.parametrize("state", ["converted", "forfeited", "expired"])
def test_forfeit_of_an_ended_bonus_is_refused(state: str) -> None:
    """Only an active bonus can be forfeited: otherwise BONUS_NOT_ACTIVE, nothing moved."""
    d = make_draft(0, bonuses=[make_bonus(1, 0, state=state), make_bonus(2, 30)])
    before = snapshot(d)
    with pytest.raises(Rejected) as err:
        rules.forfeit_bonus(d, 1, T0)
    assert err.value.reason == errors.BONUS_NOT_ACTIVE
    assert snapshot(d) == before
    assert d.postings() == []


def test_forfeit_of_a_due_bonus_finds_it_expired() -> None:
    """A bonus past its expiry is expired first, so forfeiting it is BONUS_NOT_ACTIVE."""
    wallet = make_draft(0, bonuses=[make_bonus(1, 80, expires_at=T0)])
    before = snapshot(wallet)
    with pytest.raises(Rejected) as err:
        rules.forfeit_bonus(wallet.fork(), 1, T0)
    assert err.value.reason == errors.BONUS_NOT_ACTIVE
    assert "expired" in err.value.message
    assert snapshot(wallet) == before


def test_forfeit_of_a_bonus_not_loaded_is_a_bug() -> None:
    """The use case loads the bonus with its wallet; a missing one is an AssertionError."""
    with pytest.raises(AssertionError):
        rules.forfeit_bonus(make_draft(0), 99, T0)


# (case, expiry relative to now, whether it expires)
EXPIRY_EDGES = [
    ("a second ago", timedelta(seconds=-1), True),
    ("exactly now", timedelta(0), True),
    ("a microsecond from now", timedelta(microseconds=1), False),
    ("tomorrow", timedelta(days=1), False),
]


@pytest.mark.parametrize(("case", "offset", "expires"), EXPIRY_EDGES,
                         ids=[c[0] for c in EXPIRY_EDGES])
def test_expire_due_takes_bonuses_at_or_past_their_expiry(case: str, offset: timedelta,
                                                          expires: bool) -> None:
    """expire_due expires a bonus whose expires_at <= now and returns what went to the pool."""
    d = make_draft(0, bonuses=[make_bonus(1, 70, expires_at=T0 + offset)])
    got = bonus_policy.expire_due(d, T0)
    d.check_invariants()
    if expires:
        assert got == [(1, 70)], case
        assert bonus_view(d) == {1: ("expired", 0, 0)}
        assert net(d.postings()) == {BONUS: -70, BONUS_POOL: 70}
    else:
        assert got == [], case
        assert bonus_view(d) == {1: ("active", 70, 0)}
        assert d.postings() == []


def test_expire_due_takes_every_due_bonus_and_skips_ended_ones() -> None:
    """Several due bonuses expire together (an empty one too); converted ones are left."""
    past = T0 - timedelta(hours=1)
    d = make_draft(0, bonuses=[make_bonus(1, 10, expires_at=past),
                               make_bonus(2, 0, state="converted", expires_at=past),
                               make_bonus(3, 0, expires_at=past),
                               make_bonus(4, 25),
                               make_bonus(5, 5, expires_at=past)])
    assert bonus_policy.expire_due(d, T0) == [(1, 10), (3, 0), (5, 5)]
    d.check_invariants()
    assert {i: s for i, (s, _, _) in bonus_view(d).items()} == {
        1: "expired", 2: "converted", 3: "expired", 4: "active", 5: "expired"}
    assert (d.bonus, d.changed_bonus_ids) == (25, {1, 3, 5})
    assert net(d.postings()) == {BONUS: -15, BONUS_POOL: 15}


# -- the building blocks ----------------------------------------------------------------------

def test_spend_with_a_bucket_short_of_its_bonuses_is_a_bug() -> None:
    """Spending more than the active bonuses hold means the bucket lied: AssertionError."""
    d = make_draft(0, bonuses=bonus_balances([(1, 10)]))
    with pytest.raises(AssertionError):
        bonus_policy.spend(d, 11, dest=HOUSE)


def test_credit_with_no_active_bonus_moves_nothing() -> None:
    """credit() says False and posts nothing when no bonus is active."""
    d = make_draft(0, bonuses=[make_bonus(1, 0, state="forfeited")])
    assert bonus_policy.credit(d, 50, source=HOUSE) is False
    assert d.postings() == []
    assert d.changed_bonus_ids == set()


def test_restore_of_a_bonus_not_loaded_pays_the_pool() -> None:
    """A debit naming a bonus the draft does not hold goes to the pool, never to the player."""
    d = make_draft(0, bonuses=bonus_balances([(1, 10)]))
    assert bonus_policy.restore(d, [(99, 40)], [(99, 40)], source=HOUSE) == (0, 0)
    assert net(d.postings()) == {HOUSE: -40, BONUS_POOL: 40}
    assert bonus_view(d) == {1: ("active", 10, 0)}


def test_restore_takes_wagering_back_no_lower_than_zero() -> None:
    """Wagering given back is floored at zero on the bonus it was counted on."""
    d = make_draft(0, bonuses=[make_bonus(1, 10, wagered_minor=30)])
    assert bonus_policy.restore(d, [], [(1, 50)], source=HOUSE) == (0, 0)
    assert bonus_view(d) == {1: ("active", 10, 0)}
    assert d.changed_bonus_ids == {1}
    assert d.postings() == []


def test_restore_reports_what_went_where() -> None:
    """restore() returns (to cash, to bonus) for a converted and an active bonus's debits."""
    d = make_draft(0, bonuses=[make_bonus(1, 0, state="converted"), make_bonus(2, 5),
                               make_bonus(3, 0, state="expired")])
    got = bonus_policy.restore(d, [(1, 20), (2, 30), (3, 40)], [], source=HOUSE)
    d.check_invariants()
    assert got == (20, 30)
    assert net(d.postings()) == {HOUSE: -90, CASH: 20, BONUS: 30, BONUS_POOL: 40}
    assert bonus_view(d)[2] == ("active", 35, 0)
