"""Property test of the money rules: random operation sequences on one in-memory wallet.

Hypothesis draws a starting cash balance and up to OPS_MAX operations (deposits with and
without a conversion, bets, wins with and without a known stake, rollbacks of earlier bets,
grants with random wagering requirements and expiries, forfeits, the clock moving on with
and without the expiry sweeper, chargebacks, adjustments, and withdrawals reserved,
committed, cancelled and reversed). Each runs as the use cases run it: on a fork of the
settled wallet (or on the wallet without its bonuses, for operations that do not load them),
checked, then settled; a refused one leaves the settled wallet as it was.

A small restatement of when each rule refuses, what it pays each counter-party and how
wagering moves (`Run.plan`) is checked against the rules. After every operation: its
postings sum to zero per currency; the bonus and reserved buckets are never negative; cash
is negative only after a chargeback; the bonus bucket is what the active bonuses hold; no
active bonus has met its requirement (it would have converted); every bonus the operation
changed is marked changed (only those are written back); and the postings of the whole
sequence, added to the starting buckets, give the buckets now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.wallet.unit.drafts import (
    BONUS,
    CASH,
    CURRENCY,
    HOUSE,
    PSP,
    PSP_CLEARING,
    RESERVED,
    T0,
    adjust_cmd,
    bet_cmd,
    bonus_view,
    chargeback_cmd,
    conversion,
    deposit_cmd,
    grant_cmd,
    make_draft,
    new_bonus,
    reserve_cmd,
    rollback_cmd,
    snapshot,
    sums_by_currency,
    win_cmd,
)
from wallet_core.domain import bonus as bonus_policy
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
from wallet_core.domain.rules import BetRecord, RoundStake

OPS_MIN, OPS_MAX = 10, 60  # operations per example: enough for bonuses to convert and expire
EXAMPLES = 200  # examples per run; the whole test stays within a few seconds
AMOUNT_MAX_MINOR = 500  # small amounts, so refusals for lack of funds happen often

Op = tuple[Any, ...]
amounts = st.integers(1, AMOUNT_MAX_MINOR)
picks = st.integers(0, 1_000)  # which earlier bet, bonus or withdrawal (modulo how many)
# Each kind of operation with its weight and its arguments: bets, wins and rollbacks weigh
# most, so that wagering converts bonuses and rollbacks find bets; chargebacks least, since
# the debt they leave blocks bets.
KINDS: dict[str, tuple[int, st.SearchStrategy[Op]]] = {
    "deposit": (1, st.tuples(amounts, st.none() | st.integers(1, 10**8))),
    "bet": (8, st.tuples(amounts)),
    "win": (3, st.tuples(st.integers(1, AMOUNT_MAX_MINOR // 2), st.none() | picks)),
    "rollback": (3, st.tuples(picks)),
    "grant": (4, st.tuples(amounts, st.integers(0, 4 * AMOUNT_MAX_MINOR),
                         st.integers(1, 72))),
    "forfeit": (1, st.tuples(picks)),
    "clock": (3, st.tuples(st.integers(1, 48), st.booleans())),
    "chargeback": (1, st.tuples(amounts)),
    "adjust": (2, st.tuples(st.sampled_from([Bucket.CASH, Bucket.BONUS]),
                            st.integers(-AMOUNT_MAX_MINOR, AMOUNT_MAX_MINOR).filter(bool))),
    "reserve": (2, st.tuples(amounts)),
    "commit": (1, st.tuples(picks)),
    "cancel": (1, st.tuples(picks)),
    "reverse": (1, st.tuples(picks)),
}
_WEIGHTED_KINDS = [kind for kind, (weight, _) in KINDS.items() for _ in range(weight)]


@st.composite
def operations(draw: st.DrawFn) -> Op:
    """One operation: its kind (by weight), then its arguments, as one tuple."""
    kind = draw(st.sampled_from(_WEIGHTED_KINDS))
    return (kind, *draw(KINDS[kind][1]))


@dataclass
class Withdrawal:
    amount_minor: int
    state: str  # reserved | committed | cancelled | reversed


@dataclass
class Planned:
    """One operation ready to run: its rule, whether it loads bonuses, the refusal the
    restatement expects (None: accepted), the counter-party postings it must make, and the
    bookkeeping to do once it is accepted."""

    rule: Callable[[Draft], Any]
    with_bonuses: bool
    refusal: str | None
    counterparties: dict[tuple[str, str | None], int]
    accepted: Callable[[Any], None] = lambda _result: None


@dataclass
class Run:
    wallet: Draft
    now: datetime = T0
    bets: list[BetRecord | None] = field(default_factory=list)  # None once rolled back
    bonus_ids: list[int] = field(default_factory=list)
    withdrawals: list[Withdrawal] = field(default_factory=list)
    charged_back: bool = False
    # every accepted operation's postings, per (account, currency)
    totals: dict[tuple[str, str | None], int] = field(default_factory=dict)
    start: Balances = field(init=False)  # the buckets before the first operation

    def __post_init__(self) -> None:
        self.start = self.wallet.balances()

    # -- what the rules should do -------------------------------------------------------------

    def _due_minor(self) -> int:
        """What the active bonuses due by now hold: the first expiry of an op sends it to
        the pool."""
        return sum(b.balance_minor for b in self.wallet.active_bonuses()
                   if b.expires_at <= self.now)

    def _live_bonuses(self) -> list[BonusState]:
        """Active bonuses not yet due: what an operation at `now` finds active."""
        return [b for b in self.wallet.active_bonuses() if b.expires_at > self.now]

    def plan(self, op: Op) -> Planned | None:
        """The operation as a rule plus what is expected of it; None when it has nothing to
        act on (no earlier bet to roll back, no withdrawal to finish). A "clock" operation
        moves `now` here, and runs the expiry sweeper only when asked to."""
        w, now, due = self.wallet, self.now, self._due_minor()
        pool_due: dict[tuple[str, str | None], int] = {(BONUS_POOL, None): due} if due else {}
        match op:
            case ("deposit", amount, None):
                return Planned(lambda d: rules.deposit(d, deposit_cmd(amount)), False, None,
                               {(PSP_CLEARING, None): -amount})
            case ("deposit", amount, paid):
                converted = deposit_cmd(amount, conversion=conversion(paid))
                return Planned(lambda d: rules.deposit(d, converted), False, None,
                               {(fx_account(CURRENCY), None): -amount,
                                (PSP_CLEARING, "BTC"): -paid, (fx_account("BTC"), "BTC"): paid})
            case ("bet", amount):
                refusal = (errors.WALLET_BLOCKED if w.cash < 0 else
                           errors.INSUFFICIENT_FUNDS if amount > w.cash + w.bonus - due else None)
                cash_part = min(max(w.cash, 0), amount)
                outstanding = sum(b.wagering_required_minor - b.wagered_minor
                                  for b in self._live_bonuses())

                def bet_done(record: BetRecord) -> None:
                    assert (record.cash_minor, record.bonus_minor) == (
                        cash_part, amount - cash_part)
                    # the whole stake counts, up to what the live bonuses still require
                    assert sum(m for _, m in record.wagered) == min(amount, outstanding)
                    self.bets.append(record)

                return Planned(lambda d: rules.bet(d, bet_cmd(amount), now), True, refusal,
                               {(HOUSE, None): amount, **pool_due}, bet_done)
            case ("win", amount, pick):
                stake = None
                if pick is not None and self.bets:  # a round among the last few bets
                    record = self.bets[-1 - pick % min(len(self.bets), 3)]
                    stake = (RoundStake(record.cash_minor, record.bonus_minor) if record
                             else RoundStake(0, 0))

                def win_done(fields: dict[str, Any]) -> None:
                    assert fields["cash_minor"] + fields["bonus_minor"] == amount

                return Planned(lambda d: rules.win(d, win_cmd(amount), stake, now), True, None,
                               {(HOUSE, None): -amount, **pool_due}, win_done)
            case ("rollback", pick):
                open_bets = [i for i, r in enumerate(self.bets) if r is not None]
                if not open_bets:
                    return None
                index = open_bets[-1 - pick % min(len(open_bets), 3)]  # a recent one
                record = self.bets[index]
                assert record is not None

                # Debits of bonuses taken back (forfeited, or expired by now) go to the pool.
                ended = {b.bonus_id for b in w.bonuses if b.state in ("forfeited", "expired")
                         or (b.active and b.expires_at <= now)}
                taken_back = sum(m for i, m in record.bonus_debits if i in ended)

                wagered_before = {b.bonus_id: b.wagered_minor for b in self._live_bonuses()}

                def rollback_done(_fields: dict[str, Any]) -> None:
                    # the bet's wagering is taken back from the bonuses still live
                    wagered_after = {b.bonus_id: b.wagered_minor for b in self.wallet.bonuses}
                    for bonus_id, counted in record.wagered:
                        if bonus_id in wagered_before:
                            assert wagered_after[bonus_id] == max(
                                wagered_before[bonus_id] - counted, 0)
                    self.bets[index] = None

                return Planned(lambda d: rules.rollback(d, rollback_cmd(), record, now), True,
                               None, {(HOUSE, None): -(record.cash_minor + record.bonus_minor),
                                      (BONUS_POOL, None): due + taken_back}, rollback_done)
            case ("grant", amount, required, hours):
                grant = grant_cmd(amount, required_minor=required,
                                  expires_at=now + timedelta(hours=hours))
                bonus_id = len(self.bonus_ids) + 1
                return Planned(lambda d: rules.grant_bonus(d, grant,
                                                           new_bonus(bonus_id, grant, now), now),
                               True, None, {(BONUS_POOL, None): due - amount},
                               lambda _: self.bonus_ids.append(bonus_id))
            case ("forfeit", pick):
                if not self.bonus_ids:
                    return None
                bonus_id = self.bonus_ids[pick % len(self.bonus_ids)]
                live = {b.bonus_id: b.balance_minor for b in self._live_bonuses()}
                refusal = None if bonus_id in live else errors.BONUS_NOT_ACTIVE
                return Planned(lambda d: rules.forfeit_bonus(d, bonus_id, now), True, refusal,
                               {(BONUS_POOL, None): due + live.get(bonus_id, 0)})
            case ("clock", hours, sweep):
                self.now = now + timedelta(hours=hours)
                if not sweep:
                    return None
                later = self.now
                return Planned(lambda d: bonus_policy.expire_due(d, later), True, None,
                               {(BONUS_POOL, None): self._due_minor()})
            case ("chargeback", amount):
                def charged(_fields: dict[str, Any]) -> None:
                    self.charged_back = True

                return Planned(lambda d: rules.chargeback(d, chargeback_cmd(amount)), False,
                               None, {(chargeback_account(PSP), None): amount}, charged)
            case ("adjust", bucket, amount):
                if bucket is Bucket.CASH:
                    refusal = errors.INSUFFICIENT_FUNDS if amount < 0 and -amount > w.cash else None
                    moved = {}
                else:
                    live_bonuses = self._live_bonuses()
                    refusal = (errors.NO_ACTIVE_BONUS if not live_bonuses else
                               errors.INSUFFICIENT_FUNDS
                               if -amount > live_bonuses[0].balance_minor else None)
                    moved = pool_due
                return Planned(lambda d: rules.adjust(d, adjust_cmd(bucket, amount), now), True,
                               refusal, {(ADJUSTMENTS, None): -amount, **moved})
            case ("reserve", amount):
                refusal = (errors.WALLET_BLOCKED if w.cash < 0 else
                           errors.INSUFFICIENT_FUNDS if amount > w.cash else None)
                return Planned(lambda d: rules.reserve_withdrawal(d, reserve_cmd(amount)),
                               False, refusal, {},
                               lambda _: self.withdrawals.append(Withdrawal(amount, "reserved")))
            case (("commit" | "cancel" | "reverse") as kind, pick):
                return self._finish_withdrawal(kind, pick)
        raise AssertionError(f"unknown operation {op!r}")

    def _finish_withdrawal(self, kind: str, pick: int) -> Planned | None:
        wanted, final = {"commit": ("reserved", "committed"), "cancel": ("reserved", "cancelled"),
                         "reverse": ("committed", "reversed")}[kind]
        found = [x for x in self.withdrawals if x.state == wanted]
        if not found:
            return None
        target = found[pick % len(found)]
        amount = target.amount_minor

        def done(_fields: dict[str, Any]) -> None:
            target.state = final

        if kind == "commit":
            return Planned(lambda d: rules.commit_withdrawal(d, amount, PSP), False, None,
                           {(PSP_CLEARING, None): amount}, done)
        if kind == "cancel":
            return Planned(lambda d: rules.cancel_withdrawal(d, amount), False, None, {}, done)
        return Planned(lambda d: rules.reverse_withdrawal(d, amount, PSP), False, None,
                       {(PSP_CLEARING, None): -amount}, done)

    # -- running one ----------------------------------------------------------------------------

    def apply(self, op: Op) -> None:
        planned = self.plan(op)
        if planned is None:
            return
        before, bonuses_before = snapshot(self.wallet), bonus_view(self.wallet)
        work = self.wallet.fork() if planned.with_bonuses else self.wallet.without_bonuses()
        try:
            result = planned.rule(work)
        except Rejected as rejection:
            assert rejection.reason == planned.refusal, (op, rejection.reason)
            assert snapshot(self.wallet) == before, "a refused operation changed the wallet"
            return
        assert planned.refusal is None, (op, "accepted, expected", planned.refusal)
        work.check_invariants()
        postings = work.postings()
        self._check_postings(op, postings, planned.counterparties)
        changed = {i for i, view in bonus_view(work).items() if bonuses_before.get(i) != view}
        assert changed <= work.changed_bonus_ids, ("changed but not marked", op, changed)
        self.wallet = work.settled(bonuses_from=self.wallet)
        planned.accepted(result)
        self._check_wallet()

    def _check_postings(self, op: Op, postings: list[Posting],
                        counterparties: dict[tuple[str, str | None], int]) -> None:
        assert all(total == 0 for total in sums_by_currency(postings).values()), postings
        assert all(p.amount_minor != 0 for p in postings)
        by_account = {(p.account, p.currency): p.amount_minor for p in postings}
        assert len(by_account) == len(postings), "one posting per account and currency"
        for key, amount in counterparties.items():
            assert by_account.get(key, 0) == amount, (op, key, postings)
        for key, amount in by_account.items():
            self.totals[key] = self.totals.get(key, 0) + amount

    def _check_wallet(self) -> None:
        w = self.wallet
        assert w.bonus >= 0 and w.reserved >= 0
        assert w.cash >= 0 or self.charged_back, "cash below zero without a chargeback"
        assert w.bonus == sum(b.balance_minor for b in w.active_bonuses())
        for b in w.bonuses:
            assert b.balance_minor >= 0
            assert b.active or b.balance_minor == 0, "an ended bonus holds funds"
            assert not b.active or b.wagered_minor < b.wagering_required_minor, \
                "an active bonus with its requirement met should have converted"
        assert w.reserved == sum(x.amount_minor for x in self.withdrawals
                                 if x.state == "reserved")
        for bucket, account in ((Bucket.CASH, CASH), (Bucket.BONUS, BONUS),
                                (Bucket.RESERVED, RESERVED)):
            assert getattr(self.start, bucket.value) + self.totals.get((account, None), 0) \
                == getattr(w, bucket.value), f"{bucket} does not match its postings"
        for currency in {c for _, c in self.totals}:
            assert sum(m for (_, c), m in self.totals.items() if c == currency) == 0


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(cash=st.integers(0, 2 * AMOUNT_MAX_MINOR),
       ops=st.lists(operations(), min_size=OPS_MIN, max_size=OPS_MAX))
def test_random_operation_sequences_keep_the_wallet_consistent(cash: int,
                                                               ops: list[Op]) -> None:
    """Any sequence of operations keeps every posting balanced, every bucket explained by
    its postings, bonuses consistent with the bonus bucket, and refusals side-effect free."""
    run = Run(make_draft(cash))
    for op in ops:
        run.apply(op)
