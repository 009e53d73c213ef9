"""Stateful model test: random operation sequences against the real server over gRPC.

A hypothesis RuleBasedStateMachine drives one fresh USD wallet per example through deposits,
bets, wins, rollbacks, withdrawals, bonuses, chargebacks, adjustments and retries, and after
every step compares the server (the response's balances and outcome, then GetBalance and
GetBonuses) with `Model`, a small pure-Python restatement of the wallet's rules written here
from the documented policy. It deliberately does not import wallet_core.domain: if the
product rules and this model disagree, one of them is wrong.

The machine runs in a worker thread (hypothesis' state machines are synchronous); each gRPC
call is scheduled on the session event loop, where the `client` fixture's channel lives.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar

import asyncpg
import grpc
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from wallet.v1 import wallet_service_pb2 as pb

from tests.helpers import Client, error_info, future, key
from wallet_core.storage.checker import check_ledger

pytestmark = pytest.mark.slow

ROUNDS = ("r1", "r2", "r3")
GAME = "slots"
CUR = "USD"

# --------------------------------------------------------------------------------------------
# The model: an independent restatement of the rules (wallet_core/domain/{rules,bonus}.py).
# --------------------------------------------------------------------------------------------

ACTIVE, CONVERTED, FORFEITED = "active", "converted", "forfeited"


class Refused(Exception):
    """A business rejection the model predicts, by its ErrorInfo reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class MBonus:
    granted: int
    requirement: int
    balance: int = 0
    wagered: int = 0
    state: str = ACTIVE
    server_id: str = ""


@dataclass
class MBet:
    key: str
    round_id: str
    cash: int
    bonus: int
    debits: list[tuple[int, int]]   # (model bonus index, amount taken)
    wagered: list[tuple[int, int]]  # (model bonus index, stake counted)
    rolled_back: bool = False


@dataclass
class MWithdrawal:
    server_id: str
    amount: int
    state: str = "reserved"
    final_tid: str = ""
    final_balances: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass
class Model:
    cash: int = 0
    reserved: int = 0
    bonuses: list[MBonus] = field(default_factory=list)  # in grant order (oldest first)
    bets: dict[str, MBet] = field(default_factory=dict)
    tombstones: set[str] = field(default_factory=set)
    rounds: dict[str, list[int]] = field(default_factory=dict)  # round -> [cash, bonus]

    # -- views -------------------------------------------------------------------------------

    def active(self) -> list[int]:
        return [i for i, b in enumerate(self.bonuses) if b.state == ACTIVE]

    @property
    def bonus(self) -> int:
        return sum(self.bonuses[i].balance for i in self.active())

    @property
    def available(self) -> int:
        return self.cash + self.bonus if self.cash >= 0 else 0

    def balances(self) -> tuple[int, int, int, int]:
        return (self.cash, self.bonus, self.reserved, self.available)

    # -- bonus policy ------------------------------------------------------------------------

    def _convert_completed(self) -> None:
        for i in self.active():
            b = self.bonuses[i]
            if b.wagered >= b.requirement:
                self.cash += b.balance
                b.balance = 0
                b.state = CONVERTED

    # -- operations: each returns the response fields it predicts, or raises Refused ----------

    def deposit(self, amount: int) -> None:
        self.cash += amount

    def bet(self, bet_key: str, amount: int, round_id: str) -> tuple[int, int]:
        if bet_key in self.tombstones:
            raise Refused("ALREADY_ROLLED_BACK")
        if self.cash < 0:
            raise Refused("WALLET_BLOCKED")
        if amount > self.cash + self.bonus:
            raise Refused("INSUFFICIENT_FUNDS")
        cash_part = min(self.cash, amount)
        self.cash -= cash_part
        rest = amount - cash_part
        debits: list[tuple[int, int]] = []
        for i in self.active():
            if rest == 0:
                break
            take = min(self.bonuses[i].balance, rest)
            if take:
                self.bonuses[i].balance -= take
                debits.append((i, take))
                rest -= take
        assert rest == 0
        counted: list[tuple[int, int]] = []
        stake = amount
        for i in self.active():
            if stake == 0:
                break
            b = self.bonuses[i]
            take = min(max(b.requirement - b.wagered, 0), stake)
            if take:
                b.wagered += take
                counted.append((i, take))
                stake -= take
        self._convert_completed()
        bonus_part = amount - cash_part
        self.bets[bet_key] = MBet(bet_key, round_id, cash_part, bonus_part, debits, counted)
        staked = self.rounds.setdefault(round_id, [0, 0])
        staked[0] += cash_part
        staked[1] += bonus_part
        return cash_part, bonus_part

    def win(self, amount: int, round_id: str) -> tuple[int, int]:
        s_cash, s_bonus = self.rounds.get(round_id, [0, 0])
        if s_cash + s_bonus == 0:
            cash, bonus = amount, 0
        else:
            cash = amount * s_cash // (s_cash + s_bonus)
            bonus = amount - cash
        active = self.active()
        if bonus and not active:
            cash, bonus = amount, 0
        if bonus:
            self.bonuses[active[0]].balance += bonus
        self.cash += cash
        return cash, bonus

    def rollback(self, bet_key: str) -> tuple[int, int, int]:
        """Returns (outcome, cash_amount, bonus_amount) as RollbackResponse reports them."""
        bet = self.bets.get(bet_key)
        if bet is None:
            self.tombstones.add(bet_key)
            return pb.ROLLBACK_OUTCOME_BET_NOT_FOUND, 0, 0
        if bet.rolled_back:
            return pb.ROLLBACK_OUTCOME_ALREADY_ROLLED_BACK, 0, 0
        bet.rolled_back = True
        self.cash += bet.cash
        for i, amount in bet.debits:
            b = self.bonuses[i]
            if b.state == ACTIVE:
                b.balance += amount
            elif b.state == CONVERTED:
                self.cash += amount
            # forfeited: back to the bonus pool, the player keeps nothing
        for i, amount in bet.wagered:
            b = self.bonuses[i]
            if b.state == ACTIVE:
                b.wagered = max(b.wagered - amount, 0)
        staked = self.rounds[bet.round_id]
        staked[0] -= bet.cash
        staked[1] -= bet.bonus
        return pb.ROLLBACK_OUTCOME_REVERSED, bet.cash, bet.bonus

    def grant(self, amount: int, requirement: int) -> int:
        self.bonuses.append(MBonus(granted=amount, requirement=requirement, balance=amount))
        self._convert_completed()
        return len(self.bonuses) - 1

    def forfeit(self, i: int) -> int:
        b = self.bonuses[i]
        if b.state != ACTIVE:
            raise Refused("BONUS_NOT_ACTIVE")
        amount, b.balance, b.state = b.balance, 0, FORFEITED
        return amount

    def reserve(self, amount: int) -> None:
        if self.cash < 0:
            raise Refused("WALLET_BLOCKED")
        if amount > self.cash:
            raise Refused("INSUFFICIENT_FUNDS")
        self.cash -= amount
        self.reserved += amount

    def finish(self, w: MWithdrawal, target: str) -> bool:
        """Commit, cancel or reverse; returns True when the server must answer with a replay."""
        if w.state == target:
            return True
        if target == "reversed":
            # The PSP returned a committed payout: back to cash, even while in debt.
            if w.state != "committed":
                raise Refused("WITHDRAWAL_NOT_COMMITTED")
            self.cash += w.amount
        elif w.state != "reserved":
            raise Refused("WITHDRAWAL_ALREADY_FINAL")
        else:
            self.reserved -= w.amount
            if target == "cancelled":
                self.cash += w.amount
        w.state = target
        return False

    def chargeback(self, amount: int) -> None:
        self.cash -= amount

    def adjust_cash(self, amount: int) -> None:
        if amount < 0 and -amount > self.cash:
            raise Refused("INSUFFICIENT_FUNDS")
        self.cash += amount


# --------------------------------------------------------------------------------------------
# The state machine. `pick` arguments choose among earlier items, counting back from the
# newest (so shrinking points at the most recent one).
# --------------------------------------------------------------------------------------------

SCOPES = {"Deposit": "payments", "ReserveWithdrawal": "payments",
          "CommitWithdrawal": "payments", "CancelWithdrawal": "payments",
          "ReverseWithdrawal": "payments",
          "Chargeback": "payments", "Bet": "game", "Win": "game", "Rollback": "game",
          "GrantBonus": "bonus", "ForfeitBonus": "bonus", "Adjust": "support"}
# Op-specific response fields a replay must repeat.
EXTRA_FIELDS = {"Bet": ("cash_amount", "bonus_amount"), "Win": ("cash_amount", "bonus_amount"),
                "Rollback": ("outcome", "cash_amount", "bonus_amount"),
                "ReserveWithdrawal": ("withdrawal_id",), "GrantBonus": ("bonus_id",),
                "ForfeitBonus": ("forfeited_amount",)}
WITHDRAWAL_TARGETS = {"CommitWithdrawal": "committed", "CancelWithdrawal": "cancelled",
                      "ReverseWithdrawal": "reversed"}
BONUS_STATES = {ACTIVE: pb.BONUS_STATE_ACTIVE, CONVERTED: pb.BONUS_STATE_CONVERTED,
                FORFEITED: pb.BONUS_STATE_FORFEITED}


@dataclass
class Sent:
    """A request sent once, and what it got: for retries with the same idempotency key."""

    method: str
    request: Any
    reason: str | None          # error reason, or None on success
    tid: str = ""               # transaction id (result's, or the rejection's metadata)
    balances: tuple[int, int, int, int] = (0, 0, 0, 0)
    extra: tuple[Any, ...] = ()


def _bal(b: pb.Balances) -> tuple[int, int, int, int]:
    return (b.cash, b.bonus, b.reserved, b.available)


# Mostly small stakes, so that bets usually go through and bonuses get wagered.
amounts = st.one_of(st.integers(min_value=1, max_value=120),
                    st.integers(min_value=1, max_value=600))
# Small wagering requirements (0 converts on grant), so conversions happen within a run.
requirements = st.one_of(st.integers(min_value=0, max_value=200),
                         st.integers(min_value=0, max_value=1500))


class WalletMachine(RuleBasedStateMachine):
    client: ClassVar[Client]
    loop: ClassVar[asyncio.AbstractEventLoop]

    def __init__(self) -> None:
        super().__init__()
        self.player = f"sm-{uuid.uuid4().hex[:12]}"
        self.m = Model()
        self.sent: list[Sent] = []
        self.withdrawals: list[MWithdrawal] = []
        self.bet_keys: list[str] = []       # every key a Bet was sent with (also refused ones)
        self.fresh_tombstones: list[str] = []  # tombstoned keys no Bet was sent with yet
        self._run(self.client.open(self.player, CUR))

    # -- plumbing ----------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=15)

    def _call(self, method: str, request: Any) -> tuple[Any, str | None, str]:
        """Send; returns (response or None, error reason or None, transaction id)."""
        try:
            resp = self._run(self.client.call(method, request, SCOPES[method]))
        except grpc.aio.AioRpcError as err:
            info = error_info(err)
            return None, info.reason, info.metadata.get("transaction_id", "")
        return resp, None, resp.result.transaction_id

    def _do(self, method: str, request: Any, predict: Any, *, record: bool = True) -> Any:
        """Run `predict` on the model, send the request, compare outcome and balances.

        `predict` applies the operation to the model and returns the response fields it
        expects, or raises Refused (before changing anything) with the expected reason."""
        try:
            expected: Any = predict()
            expected_reason = None
        except Refused as r:
            expected, expected_reason = None, r.reason
        resp, reason, tid = self._call(method, request)
        assert reason == expected_reason, (
            f"{method}: server said {reason or 'OK'}, model said {expected_reason or 'OK'}")
        if resp is not None:
            assert not resp.result.replay, f"{method}: fresh request answered as a replay"
            assert _bal(resp.result.balances) == self.m.balances(), (
                f"{method}: server balances (cash, bonus, reserved, available) "
                f"{_bal(resp.result.balances)} != model {self.m.balances()}")
        if record:
            extra = tuple(getattr(resp, f) for f in EXTRA_FIELDS.get(method, ())) if resp else ()
            self.sent.append(Sent(method, request, reason, tid,
                                  _bal(resp.result.balances) if resp else (0, 0, 0, 0), extra))
        return resp, expected

    # -- rules ---------------------------------------------------------------------------------

    @initialize(amount=st.integers(min_value=0, max_value=600))
    def first_deposit(self, amount: int) -> None:
        if amount:
            self.deposit(amount)

    @rule(amount=st.integers(min_value=1, max_value=400))
    def deposit(self, amount: int) -> None:
        ref = key("dep")
        self._do("Deposit", pb.DepositRequest(
            player_id=self.player, currency=CUR, amount=amount, psp="stripe",
            psp_reference=f"pi_{ref}", idempotency_key=ref), lambda: self.m.deposit(amount))

    def _bet(self, bet_key: str, amount: int, round_id: str) -> None:
        self.bet_keys.append(bet_key)
        resp, split = self._do("Bet", pb.BetRequest(
            player_id=self.player, currency=CUR, amount=amount, game_id=GAME,
            round_id=round_id, idempotency_key=bet_key),
            lambda: self.m.bet(bet_key, amount, round_id))
        if resp is not None:
            assert (resp.cash_amount, resp.bonus_amount) == split, "Bet: cash/bonus split"

    @rule(amount=amounts, round_id=st.sampled_from(ROUNDS), beyond_cash=st.booleans())
    def bet(self, amount: int, round_id: str, beyond_cash: bool) -> None:
        """`beyond_cash` stakes all the cash plus `amount`, so that bonus funds are spent."""
        if beyond_cash:
            amount += max(self.m.cash, 0)
        self._bet(key("bet"), amount, round_id)

    @precondition(lambda self: bool(self.fresh_tombstones))
    @rule(amount=amounts, round_id=st.sampled_from(ROUNDS))
    def bet_after_rollback(self, amount: int, round_id: str) -> None:
        self._bet(self.fresh_tombstones.pop(0), amount, round_id)

    @rule(amount=st.integers(min_value=1, max_value=800), round_id=st.sampled_from(ROUNDS))
    def win(self, amount: int, round_id: str) -> None:
        resp, split = self._do("Win", pb.WinRequest(
            player_id=self.player, currency=CUR, amount=amount, game_id=GAME,
            round_id=round_id, idempotency_key=key("win")),
            lambda: self.m.win(amount, round_id))
        assert (resp.cash_amount, resp.bonus_amount) == split, "Win: cash/bonus split"

    def _rollback(self, bet_key: str) -> None:
        resp, expected = self._do("Rollback", pb.RollbackRequest(
            player_id=self.player, currency=CUR, game_id=GAME, bet_idempotency_key=bet_key,
            idempotency_key=key("rb")), lambda: self.m.rollback(bet_key))
        assert (resp.outcome, resp.cash_amount, resp.bonus_amount) == expected, (
            "Rollback: (outcome, cash_amount, bonus_amount)")

    @rule(known=st.sampled_from([True, True, True, False]),
          pick=st.integers(min_value=0, max_value=10_000))
    def rollback(self, known: bool, pick: int) -> None:
        """Of a bet sent before (placed: reversed, or already rolled back when repeated;
        refused: not found), or of a key never seen (not found, and tombstoned)."""
        if known and self.bet_keys:
            self._rollback(self.bet_keys[-1 - pick % len(self.bet_keys)])
            return
        bet_key = key("ghost")
        self._rollback(bet_key)
        self.fresh_tombstones.append(bet_key)

    @rule(amount=amounts)
    def reserve(self, amount: int) -> None:
        resp, _ = self._do("ReserveWithdrawal", pb.ReserveWithdrawalRequest(
            player_id=self.player, currency=CUR, amount=amount, psp="stripe",
            idempotency_key=key("wd")), lambda: self.m.reserve(amount))
        if resp is not None:
            assert resp.withdrawal_id, "ReserveWithdrawal: no withdrawal_id"
            self.withdrawals.append(MWithdrawal(resp.withdrawal_id, amount))

    def _finish(self, method: str, pick: int) -> None:
        w = self.withdrawals[-1 - pick % len(self.withdrawals)]
        target = WITHDRAWAL_TARGETS[method]
        if method == "CommitWithdrawal":
            request: Any = pb.CommitWithdrawalRequest(withdrawal_id=w.server_id,
                                                      idempotency_key=key("wdc"))
        elif method == "CancelWithdrawal":
            request = pb.CancelWithdrawalRequest(withdrawal_id=w.server_id, reason="player",
                                                 idempotency_key=key("wdx"))
        else:
            request = pb.ReverseWithdrawalRequest(withdrawal_id=w.server_id,
                                                  reason="payout.failed",
                                                  idempotency_key=key("wdr"))
        try:
            replay = self.m.finish(w, target)
        except Refused as r:
            resp, reason, _ = self._call(method, request)
            assert reason == r.reason, f"{method} of a {w.state} withdrawal: {reason or 'OK'}"
            self.sent.append(Sent(method, request, reason))
            return
        resp, reason, tid = self._call(method, request)
        assert reason is None, f"{method} of a {w.state} withdrawal: {reason}"
        if replay:
            # The same final step again, under a new key: the first one's recorded answer.
            assert resp.result.replay, f"{method} repeated: replay flag not set"
            assert tid == w.final_tid, f"{method} repeated: transaction id {tid} != {w.final_tid}"
            assert _bal(resp.result.balances) == w.final_balances, (
                f"{method} repeated: balances {_bal(resp.result.balances)} "
                f"!= recorded {w.final_balances}")
        else:
            assert not resp.result.replay, f"{method}: fresh request answered as a replay"
            assert _bal(resp.result.balances) == self.m.balances(), (
                f"{method}: server balances {_bal(resp.result.balances)} "
                f"!= model {self.m.balances()}")
            w.final_tid, w.final_balances = tid, _bal(resp.result.balances)
            self.sent.append(Sent(method, request, None, tid, w.final_balances))

    @precondition(lambda self: bool(self.withdrawals))
    @rule(method=st.sampled_from(["CommitWithdrawal", "CancelWithdrawal", "ReverseWithdrawal"]),
          pick=st.integers(min_value=0, max_value=10_000))
    def finish_withdrawal(self, method: str, pick: int) -> None:
        """Commit or cancel a reserved withdrawal, or reverse a committed one; repeat a step
        (a replay under a new key); or attempt a step its state refuses
        (WITHDRAWAL_ALREADY_FINAL, WITHDRAWAL_NOT_COMMITTED)."""
        self._finish(method, pick)

    @rule(amount=amounts, requirement=requirements)
    def grant(self, amount: int, requirement: int) -> None:
        index: list[int] = []
        resp, _ = self._do("GrantBonus", pb.GrantBonusRequest(
            player_id=self.player, currency=CUR, amount=amount,
            wagering_requirement=requirement, expires_at=future(30),
            idempotency_key=key("grant")),
            lambda: index.append(self.m.grant(amount, requirement)))
        assert resp.bonus_id, "GrantBonus: no bonus_id"
        self.m.bonuses[index[0]].server_id = resp.bonus_id

    @precondition(lambda self: bool(self.m.bonuses))
    @rule(pick=st.integers(min_value=0, max_value=10_000))
    def forfeit(self, pick: int) -> None:
        i = len(self.m.bonuses) - 1 - pick % len(self.m.bonuses)
        resp, amount = self._do("ForfeitBonus", pb.ForfeitBonusRequest(
            bonus_id=self.m.bonuses[i].server_id, idempotency_key=key("forfeit")),
            lambda: self.m.forfeit(i))
        if resp is not None:
            assert resp.forfeited_amount == amount, "ForfeitBonus: forfeited_amount"

    @rule(amount=st.integers(min_value=1, max_value=800))
    def chargeback(self, amount: int) -> None:
        ref = key("cb")
        self._do("Chargeback", pb.ChargebackRequest(
            player_id=self.player, currency=CUR, amount=amount, psp="stripe",
            psp_reference=f"cb_{ref}", idempotency_key=ref), lambda: self.m.chargeback(amount))

    @rule(amount=st.integers(min_value=-600, max_value=600).filter(lambda a: a != 0))
    def adjust_cash(self, amount: int) -> None:
        self._do("Adjust", pb.AdjustRequest(
            player_id=self.player, currency=CUR, bucket=pb.BUCKET_CASH, amount=amount,
            reason="support correction", idempotency_key=key("adj")),
            lambda: self.m.adjust_cash(amount))

    @precondition(lambda self: bool(self.sent))
    @rule(pick=st.integers(min_value=0, max_value=10_000))
    def retry(self, pick: int) -> None:
        """The same request under the same key: the recorded answer, and nothing moves."""
        s = self.sent[-1 - pick % len(self.sent)]
        resp, reason, tid = self._call(s.method, s.request)
        assert reason == s.reason, (
            f"retry of {s.method}: server said {reason or 'OK'}, first answer was "
            f"{s.reason or 'OK'}")
        if s.tid:
            assert tid == s.tid, f"retry of {s.method}: transaction id {tid} != {s.tid}"
        if resp is not None:
            assert resp.result.replay, f"retry of {s.method}: replay flag not set"
            assert _bal(resp.result.balances) == s.balances, (
                f"retry of {s.method}: balances {_bal(resp.result.balances)} "
                f"!= first answer {s.balances}")
            extra = tuple(getattr(resp, f) for f in EXTRA_FIELDS.get(s.method, ()))
            assert extra == s.extra, f"retry of {s.method}: fields {extra} != {s.extra}"

    # -- after every step ----------------------------------------------------------------------

    @invariant()
    def server_matches_model(self) -> None:
        b = self._run(self.client.balance(self.player, CUR))
        assert _bal(b) == self.m.balances(), (
            f"GetBalance (cash, bonus, reserved, available) {_bal(b)} != model "
            f"{self.m.balances()}")
        r = self._run(self.client.call("GetBonuses", pb.GetBonusesRequest(
            player_id=self.player, currency=CUR, include_inactive=True), "read"))
        server = {x.bonus_id: (x.state, x.balance, x.wagered) for x in r.bonuses}
        model = {x.server_id: (BONUS_STATES[x.state], x.balance, x.wagered)
                 for x in self.m.bonuses}
        assert server == model, f"GetBonuses (state, balance, wagered) {server} != model {model}"


def _scenario() -> None:
    """One fixed walk through the paths random runs reach only sometimes."""
    m = WalletMachine()
    steps: list[tuple[str, dict[str, Any]]] = [
        ("first_deposit", {"amount": 100}),
        ("grant", {"amount": 200, "requirement": 400}),           # bonus A
        ("bet", {"amount": 50, "round_id": "r1", "beyond_cash": True}),   # 100 cash + 50 A
        ("win", {"amount": 91, "round_id": "r1"}),                 # split 60 cash / 31 bonus
        ("rollback", {"known": True, "pick": 0}),                  # reversed, back to A
        ("rollback", {"known": True, "pick": 0}),                  # already rolled back
        ("retry", {"pick": 0}),
        ("bet", {"amount": 40, "round_id": "r2", "beyond_cash": True}),   # spends A
        ("grant", {"amount": 30, "requirement": 0}),               # converts at once
        ("grant", {"amount": 80, "requirement": 1000}),            # bonus C
        ("bet", {"amount": 250, "round_id": "r2", "beyond_cash": False}),  # A reaches 400
        ("rollback", {"known": True, "pick": 1}),                  # A converted: debit to cash
        ("bet", {"amount": 20, "round_id": "r3", "beyond_cash": True}),   # spends C
        ("forfeit", {"pick": 0}),                                  # C forfeited
        ("forfeit", {"pick": 0}),                                  # BONUS_NOT_ACTIVE
        ("rollback", {"known": True, "pick": 0}),                  # C forfeited: to the pool
        ("win", {"amount": 77, "round_id": "r3"}),                 # no active bonus: all cash
        ("rollback", {"known": False, "pick": 0}),                 # unknown: tombstone
        ("bet_after_rollback", {"amount": 5, "round_id": "r1"}),  # ALREADY_ROLLED_BACK
        ("retry", {"pick": 0}),
        ("deposit", {"amount": 300}),
        ("reserve", {"amount": 120}),
        ("finish_withdrawal", {"method": "CancelWithdrawal", "pick": 0}),
        ("finish_withdrawal", {"method": "CommitWithdrawal", "pick": 0}),  # already final
        ("finish_withdrawal", {"method": "CancelWithdrawal", "pick": 0}),  # replay
        ("finish_withdrawal", {"method": "ReverseWithdrawal", "pick": 0}),  # NOT_COMMITTED
        ("reserve", {"amount": 60}),
        ("finish_withdrawal", {"method": "ReverseWithdrawal", "pick": 0}),  # NOT_COMMITTED
        ("finish_withdrawal", {"method": "CommitWithdrawal", "pick": 0}),
        ("finish_withdrawal", {"method": "CommitWithdrawal", "pick": 0}),  # replay
        ("finish_withdrawal", {"method": "ReverseWithdrawal", "pick": 0}),  # cash back
        ("finish_withdrawal", {"method": "ReverseWithdrawal", "pick": 0}),  # replay
        ("retry", {"pick": 0}),
        ("finish_withdrawal", {"method": "CommitWithdrawal", "pick": 0}),  # already final
        ("reserve", {"amount": 40}),
        ("finish_withdrawal", {"method": "CommitWithdrawal", "pick": 0}),
        ("adjust_cash", {"amount": -100_000}),                     # INSUFFICIENT_FUNDS
        ("adjust_cash", {"amount": -10}),
        ("chargeback", {"amount": 5_000}),                         # cash < 0
        ("bet", {"amount": 1, "round_id": "r1", "beyond_cash": False}),   # WALLET_BLOCKED
        ("reserve", {"amount": 1}),                                # WALLET_BLOCKED
        ("retry", {"pick": 1}),
        ("finish_withdrawal", {"method": "ReverseWithdrawal", "pick": 0}),  # in debt: credits
        ("adjust_cash", {"amount": 6_000}),
        ("bet", {"amount": 1, "round_id": "r1", "beyond_cash": False}),
    ]
    m.server_matches_model()
    for name, args in steps:
        getattr(m, name)(**args)
        m.server_matches_model()


async def test_fixed_scenario_follows_the_model(client: Client, db: asyncpg.Connection) -> None:
    WalletMachine.client = client
    WalletMachine.loop = asyncio.get_running_loop()
    await asyncio.to_thread(_scenario)
    assert await check_ledger(db) == []


async def test_server_follows_the_model(client: Client, db: asyncpg.Connection) -> None:
    WalletMachine.client = client
    WalletMachine.loop = asyncio.get_running_loop()
    await asyncio.to_thread(
        run_state_machine_as_test, WalletMachine,
        settings=settings(max_examples=60, stateful_step_count=40, deadline=None,
                          database=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture]))
    assert await check_ledger(db) == []
