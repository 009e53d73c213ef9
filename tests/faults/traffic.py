"""The traffic driver: many concurrent clients moving money over real gRPC while a fault
happens, retrying like a real client and recording what each operation became.

Each client plays whole player sessions, one player at a time and one call at a time per
player: open, deposit, bets, wins, a rollback, a bonus granted and forfeited, withdrawals
reserved then committed (and reversed) or cancelled, a chargeback, a support adjustment, a
refused bet, and ExecuteBatch rounds. Every operation has its own idempotency key; an
operation that got no answer is retried with the SAME key and the SAME request message
(UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, ...), within bounded attempts and time. A player
whose operation is given up on is left alone for the rest of the run ("tainted"), because a
real client would not carry on with a session whose last call it cannot account for.

What is recorded per operation: the attempts, the codes seen, the acknowledged transaction
id (an OK answer, or a recorded business rejection, which carries one too) and the balances
it reported. `converge()` is the client's final retries after the fault has healed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

from tests.helpers import SERVICES, TOKENS

# Codes a client retries with the same key: nothing or something may have been recorded, and
# the journal makes the retry safe either way. INTERNAL is retried too, but counted: it is
# a product bug when it shows up, and the verifier reports it.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED,
                       grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                       grpc.StatusCode.CANCELLED})
# Reconnect quickly after a killed server: gRPC's default backoff grows to 120 s.
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 1000),
                   ("grpc.enable_retries", 0)]
START_CASH_MINOR = 500_00
# Rounds after a session's script, so new sessions (every operation kind) keep starting.
SESSION_ROUNDS = 12


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of one client's retries. Costs: attempts × deadline is the longest a single
    call may hold its client; the run ends at most `op_budget_s` after its duration."""

    attempt_deadline_s: float = 3.0
    # Scenario 8: the first attempt's deadline is drawn from this range (tiny), each retry
    # multiplies it by 4 up to attempt_deadline_s.
    first_deadline_s: tuple[float, float] | None = None
    attempts_max: int = 60
    op_budget_s: float = 25.0
    backoff_s_min: float = 0.02
    backoff_s_max: float = 0.5


@dataclass(eq=False)
class Op:
    """One money-moving operation (an ExecuteBatch carries several)."""

    kind: str
    caller: str
    key: str
    player: str
    acked_tx: str | None = None
    acked_status: str = ""           # "ok" or "rejected"
    acked_reason: str = ""
    acked_in_converge: bool = False
    balances: tuple[int, int, int] | None = None   # cash, bonus, reserved after it
    tx_mismatch: str = ""            # a later answer named another transaction: a bug
    replay: bool = False             # the acknowledging answer was a replay


@dataclass(eq=False)
class Call:
    """One RPC: the request message built once, so every retry sends the same bytes."""

    method: str
    scope: str
    request: Any
    ops: list[Op]
    attempts: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    response: Any = None
    gave_up: bool = False

    @property
    def acked(self) -> bool:
        return all(op.acked_tx is not None for op in self.ops)


@dataclass
class Stats:
    attempts: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    attempt_s_max: float = 0.0
    players: int = 0
    tainted_players: set[str] = field(default_factory=set)
    # Calls whose earlier attempt failed yet had committed: the retry got a replay.
    replayed_after_error: int = 0
    deadline_then_replayed: int = 0


def _md(scope: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {TOKENS[scope]}")]


def _balances(result: pb.OperationResult) -> tuple[int, int, int]:
    b = result.balances
    return (b.cash, b.bonus, b.reserved)


def _error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except ValueError:
        return None
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


class Traffic:
    """Concurrent clients against `targets` (host:port, one channel per client)."""

    def __init__(self, run_id: str, targets: list[str], *, clients: int = 16,
                 policy: RetryPolicy | None = None, seed: int = 0) -> None:
        self.run_id = run_id
        self.targets = targets
        self.clients = clients
        self.policy = policy or RetryPolicy()
        self.rng = random.Random(seed or None)
        self.calls: list[Call] = []
        self.last_balances: dict[str, tuple[int, int, int]] = {}
        self.stats = Stats()
        self._stop_at = 0.0
        self._seq = 0

    # -- keys and requests -------------------------------------------------------------------

    def key(self, tag: str) -> str:
        self._seq += 1
        return f"{self.run_id}-{tag}-{self._seq}-{uuid.uuid4().hex[:6]}"

    def _call(self, method: str, scope: str, player: str, request: Any,
              kind: str | None = None) -> Call:
        op = Op(kind or method, SERVICES[scope], request.idempotency_key, player)
        return Call(method, scope, request, [op])

    # -- sending with retries ----------------------------------------------------------------

    async def send(self, stub: pb_grpc.WalletServiceStub, call: Call, *,
                   budget_s: float | None = None, deadline_s: float | None = None) -> bool:
        """Retry `call` until every operation in it is acknowledged, or the bounds run out."""
        policy = self.policy
        give_up_at = time.monotonic() + (budget_s or policy.op_budget_s)
        if deadline_s is None:
            deadline_s = (self.rng.uniform(*policy.first_deadline_s) if policy.first_deadline_s
                          else policy.attempt_deadline_s)
        backoff_s = policy.backoff_s_min
        for _ in range(policy.attempts_max):
            call.attempts += 1
            self.stats.attempts += 1
            started = time.monotonic()
            code = await self._attempt(stub, call, deadline_s)
            self.stats.attempt_s_max = max(self.stats.attempt_s_max, time.monotonic() - started)
            call.codes[code] += 1
            self.stats.codes[code] += 1
            if call.acked:
                if call.attempts > 1 and any(op.replay for op in call.ops):
                    self.stats.replayed_after_error += 1
                    self.stats.deadline_then_replayed += bool(call.codes["DEADLINE_EXCEEDED"])
                return True
            if time.monotonic() + backoff_s > give_up_at:
                break
            await asyncio.sleep(backoff_s * self.rng.uniform(0.5, 1.0))
            backoff_s = min(backoff_s * 2, policy.backoff_s_max)
            deadline_s = min(deadline_s * 4, max(policy.attempt_deadline_s, deadline_s))
        call.gave_up = True
        return False

    async def _attempt(self, stub: pb_grpc.WalletServiceStub, call: Call,
                       deadline_s: float) -> str:
        try:
            response = await getattr(stub, call.method)(call.request, metadata=_md(call.scope),
                                                        timeout=deadline_s)
        except grpc.aio.AioRpcError as err:
            if err.code() in RETRYABLE:
                return err.code().name
            info = _error_info(err)
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION and info is not None:
                self._ack(call.ops[0], info.metadata.get("transaction_id", ""), "rejected",
                          info.reason, None, info.metadata.get("replay") == "true")
                return "FAILED_PRECONDITION"
            # Anything else (NOT_FOUND, ALREADY_EXISTS: IDEMPOTENCY_KEY_REUSED, ...) means the
            # driver or the product is wrong: record it, and let the verifier fail the run.
            return f"{err.code().name}:{info.reason if info else err.details()}"
        call.response = response
        if call.method == "ExecuteBatch":
            self._ack_batch(call, response)
        else:
            self._ack(call.ops[0], response.result.transaction_id, "ok", "",
                      _balances(response.result), response.result.replay)
        return "OK"

    def _ack_batch(self, call: Call, response: pb.ExecuteBatchResponse) -> None:
        for op, result in zip(call.ops, response.results, strict=True):
            which = result.WhichOneof("outcome")
            if which == "error":
                if result.error.code == "FAILED_PRECONDITION":
                    self._ack(op, result.error.metadata.get("transaction_id", ""),
                              "rejected", result.error.reason, None,
                              result.error.metadata.get("replay") == "true")
                # Transient for this operation: the whole batch is sent again.
                call.codes[f"batch:{result.error.code}:{result.error.reason}"] += 1
                continue
            inner = getattr(result, which).result
            self._ack(op, inner.transaction_id, "ok", "", _balances(inner), inner.replay)

    def _ack(self, op: Op, tx: str, status: str, reason: str,
             balances: tuple[int, int, int] | None, replay: bool) -> None:
        if op.acked_tx is not None:
            if op.acked_tx != tx:  # a batch sent again: its replays must name the same tx
                op.tx_mismatch = f"{op.acked_tx} then {tx}"
            return
        op.acked_tx, op.acked_status, op.acked_reason, op.replay = tx, status, reason, replay
        if balances is not None:
            op.balances = balances
            self.last_balances[op.player] = balances

    # -- player sessions ---------------------------------------------------------------------

    async def run(self, duration_s: float) -> None:
        """Run every client until `duration_s` has passed (each finishes its call in hand)."""
        self._stop_at = time.monotonic() + duration_s
        await asyncio.gather(*(self._client(n) for n in range(self.clients)))

    async def run_while(self, fault: Callable[[], Awaitable[None]], duration_s: float) -> None:
        """Traffic for `duration_s`, with `fault()` running alongside from the start."""
        traffic = asyncio.create_task(self.run(duration_s))
        try:
            await fault()
        finally:
            await traffic

    def _running(self) -> bool:
        return time.monotonic() < self._stop_at

    async def _client(self, n: int) -> None:
        target = self.targets[n % len(self.targets)]
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.WalletServiceStub(channel)
            session = 0
            while self._running():
                session += 1
                player = f"{self.run_id}-c{n}-s{session}"
                self.stats.players += 1
                if not await self._session(stub, player):
                    self.stats.tainted_players.add(player)

    async def _session(self, stub: pb_grpc.WalletServiceStub, player: str) -> bool:
        """One player's script; False when an operation was given up on."""
        steps: list[Callable[[pb_grpc.WalletServiceStub, str], Awaitable[bool]]] = [
            self._open_and_fund, self._game_round, self._rollback_round, self._bonus,
            self._withdrawals, self._support, self._batch_round, self._game_round,
            self._batch_round]
        for step in steps:
            if not self._running():
                return True
            if not await step(stub, player):
                return False
        for _ in range(SESSION_ROUNDS):  # then rounds: the bulk of the load
            if not self._running():
                return True
            step = self._batch_round if self.rng.random() < 0.3 else self._game_round
            if not await step(stub, player):
                return False
        return True

    async def _do(self, stub: pb_grpc.WalletServiceStub, call: Call) -> Call | None:
        self.calls.append(call)
        return call if await self.send(stub, call) else None

    async def _open_and_fund(self, stub: pb_grpc.WalletServiceStub, player: str) -> bool:
        opened = await self._do(stub, self._call("OpenWallet", "payments", player,
                                                 pb.OpenWalletRequest(
                                                     player_id=player, currency="USD",
                                                     idempotency_key=self.key("open"))))
        if opened is None:
            return False
        ref = self.key("dep")
        return await self._do(stub, self._call("Deposit", "payments", player, pb.DepositRequest(
            player_id=player, currency="USD", amount=START_CASH_MINOR, psp="stripe",
            psp_reference=f"pi_{ref}", idempotency_key=ref))) is not None

    def _bet(self, player: str, amount: int, round_id: str) -> pb.BetRequest:
        return pb.BetRequest(player_id=player, currency="USD", amount=amount, game_id="slots",
                             round_id=round_id, idempotency_key=self.key("bet"))

    def _win(self, player: str, amount: int, round_id: str) -> pb.WinRequest:
        return pb.WinRequest(player_id=player, currency="USD", amount=amount, game_id="slots",
                             round_id=round_id, idempotency_key=self.key("win"))

    async def _game_round(self, stub: pb_grpc.WalletServiceStub, player: str) -> bool:
        round_id = self.key("r")
        bet = self._bet(player, self.rng.randint(1, 300), round_id)
        if await self._do(stub, self._call("Bet", "game", player, bet)) is None:
            return False
        win = self._win(player, self.rng.randint(1, 400), round_id)
        return await self._do(stub, self._call("Win", "game", player, win)) is not None

    async def _rollback_round(self, stub: pb_grpc.WalletServiceStub, player: str) -> bool:
        bet = self._bet(player, 2_00, self.key("r"))
        if await self._do(stub, self._call("Bet", "game", player, bet)) is None:
            return False
        rollback = pb.RollbackRequest(player_id=player, currency="USD", game_id="slots",
                                      bet_idempotency_key=bet.idempotency_key,
                                      idempotency_key=self.key("rb"))
        if await self._do(stub, self._call("Rollback", "game", player, rollback)) is None:
            return False
        refused = self._bet(player, 10_000_00, self.key("r"))  # INSUFFICIENT_FUNDS, recorded
        return await self._do(stub, self._call("Bet", "game", player, refused)) is not None

    async def _bonus(self, stub: pb_grpc.WalletServiceStub, player: str) -> bool:
        expires_at = pb.GrantBonusRequest().expires_at
        expires_at.FromDatetime(datetime.now(UTC) + timedelta(days=7))
        grant = pb.GrantBonusRequest(player_id=player, currency="USD", amount=20_00,
                                     wagering_requirement=100_00, expires_at=expires_at,
                                     idempotency_key=self.key("grant"))
        granted = await self._do(stub, self._call("GrantBonus", "bonus", player, grant))
        if granted is None:
            return False
        if granted.response is None:  # refused: nothing to forfeit
            return True
        forfeit = pb.ForfeitBonusRequest(bonus_id=granted.response.bonus_id,
                                         idempotency_key=self.key("forfeit"))
        return await self._do(stub, self._call("ForfeitBonus", "bonus", player,
                                               forfeit)) is not None

    async def _withdrawals(self, stub: pb_grpc.WalletServiceStub, player: str) -> bool:
        for final in ("CommitWithdrawal", "CancelWithdrawal"):
            reserve = pb.ReserveWithdrawalRequest(player_id=player, currency="USD",
                                                  amount=self.rng.randint(1_00, 20_00),
                                                  psp="adyen", idempotency_key=self.key("wd"))
            reserved = await self._do(stub, self._call("ReserveWithdrawal", "payments", player,
                                                       reserve))
            if reserved is None:
                return False
            if reserved.response is None:
                continue
            wid = reserved.response.withdrawal_id
            request: Any = (pb.CommitWithdrawalRequest(withdrawal_id=wid,
                                                       idempotency_key=self.key("commit"))
                            if final == "CommitWithdrawal" else
                            pb.CancelWithdrawalRequest(withdrawal_id=wid, reason="player",
                                                       idempotency_key=self.key("cancel")))
            if await self._do(stub, self._call(final, "payments", player, request)) is None:
                return False
            if final == "CommitWithdrawal":
                reverse = pb.ReverseWithdrawalRequest(withdrawal_id=wid, reason="returned",
                                                      idempotency_key=self.key("reverse"))
                if await self._do(stub, self._call("ReverseWithdrawal", "payments", player,
                                                   reverse)) is None:
                    return False
        return True

    async def _support(self, stub: pb_grpc.WalletServiceStub, player: str) -> bool:
        ref = self.key("cb")
        chargeback = pb.ChargebackRequest(player_id=player, currency="USD", amount=1_00,
                                          psp="stripe", psp_reference=f"pi_{ref}",
                                          idempotency_key=ref)
        if await self._do(stub, self._call("Chargeback", "payments", player,
                                           chargeback)) is None:
            return False
        adjust = pb.AdjustRequest(player_id=player, currency="USD", bucket=pb.BUCKET_CASH,
                                  amount=self.rng.choice([-50, 75]), reason="goodwill",
                                  idempotency_key=self.key("adj"))
        return await self._do(stub, self._call("Adjust", "support", player, adjust)) is not None

    async def _batch_round(self, stub: pb_grpc.WalletServiceStub, player: str) -> bool:
        """ExecuteBatch (non-atomic): bet, win, bet, win on two rounds of one player."""
        operations: list[pb.BatchOperation] = []
        ops: list[Op] = []
        for _ in range(2):
            round_id = self.key("br")
            bet = self._bet(player, self.rng.randint(1, 200), round_id)
            win = self._win(player, self.rng.randint(1, 300), round_id)
            operations += [pb.BatchOperation(bet=bet), pb.BatchOperation(win=win)]
            ops += [Op("Batch.Bet", SERVICES["game"], bet.idempotency_key, player),
                    Op("Batch.Win", SERVICES["game"], win.idempotency_key, player)]
        call = Call("ExecuteBatch", "game",
                    pb.ExecuteBatchRequest(operations=operations, atomic=False), ops)
        return await self._do(stub, call) is not None

    # -- after the fault ---------------------------------------------------------------------

    def unacked(self) -> list[Call]:
        return [c for c in self.calls if not c.acked]

    async def converge(self, target: str, *, budget_s: float = 60.0) -> None:
        """The client's last retries, once the fault has healed: each unacknowledged call
        again with the same key and request, generous deadlines, one at a time per player."""
        pending = self.unacked()
        before = {id(op) for c in pending for op in c.ops}
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.WalletServiceStub(channel)
            with contextlib.suppress(TimeoutError):  # the verifier reports what is left
                async with asyncio.timeout(budget_s):
                    for call in pending:
                        call.gave_up = False
                        await self.send(stub, call, budget_s=budget_s, deadline_s=5.0)
        for call in pending:
            for op in call.ops:
                if id(op) in before and op.acked_tx is not None:
                    op.acked_in_converge = True
