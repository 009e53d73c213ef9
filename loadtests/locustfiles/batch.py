"""Batched game traffic: ExecuteBatch calls carrying rounds of bet + win for many players.

Each call carries LOADTEST_BATCH_OPS operations (default 100): rounds of a bet, then in half
the rounds a win of twice the stake for the same round (so balances random-walk instead of
draining), over the user's own funded players. ATOMIC_SHARE of the calls are atomic.

Checks (request type "check", any fails the run): one result per operation, each of the
operation's own kind or an error; an atomic batch is all results or all errors. Expected
per-operation errors (INSUFFICIENT_FUNDS, and BATCH_ROLLED_BACK in an atomic batch that had
one) are counted, not failed; any other per-operation error is a failure named
"<op> in batch". At the end the log states the operations per second, which is the figure
to compare with single calls (Locust's req/s counts calls).

A wallet that does not implement ExecuteBatch yet answers UNIMPLEMENTED: the scenario then
says so in the log, records the failure and stops the run, which fails the thresholds.

    locust -f loadtests/locustfiles/batch.py --headless -u 8 -r 8 -t 30s \\
        --host grpc://127.0.0.1:50051      # WALLET_CALLERS_FILE=.run/callers.json
"""

from __future__ import annotations

import itertools
import logging
import random
from typing import Any

import gevent
import grpc
from locust import constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from wallet.v1 import wallet_service_pb2 as pb

from loadtests import thresholds
from loadtests.grpc_user import (
    ERROR_TEXT_MAX_CHARS,
    FundedPlayers,
    GrpcUser,
    env_int,
    new_key,
    run_id,
)

thresholds.install(fail_ratio_max=0.01, p99_ms_max=3000)

log = logging.getLogger("loadtests.batch")

BATCH_OPS = env_int("LOADTEST_BATCH_OPS", 100, low=2, high=1000)
ATOMIC_SHARE = 0.1
WIN_SHARE = 0.5
PLAYERS_PER_USER = 16
FUNDING_MINOR = 5_000_000
BET_MIN_MINOR, BET_MAX_MINOR = 100, 2_000
GAME_ID = "slots-batch"
QUIT_DELAY_S = 0.2
OP_REJECTIONS = frozenset({"INSUFFICIENT_FUNDS", "BATCH_ROLLED_BACK"})

_funded = FundedPlayers(amount_minor=FUNDING_MINOR)
_user_numbers = itertools.count()
# Operations answered (results of any kind), those that were expected rejections, and
# whether a user already found ExecuteBatch missing (so the log says it once).
_ops = {"answered": 0, "rejected": 0, "gave_up": 0}


@events.quitting.add_listener
def _report_ops(environment: Environment, **_kwargs: Any) -> None:
    total = environment.stats.total
    elapsed_s = max(total.last_request_timestamp - total.start_time, 1e-3)
    if _ops["answered"]:
        log.info("ExecuteBatch: %d operations answered (%d rejected as expected), %.0f ops/s",
                 _ops["answered"], _ops["rejected"], _ops["answered"] / elapsed_s)


class BatchTraffic(GrpcUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = random.Random()
        number = next(_user_numbers)
        self.players = [f"lt-{run_id()}-x{number}-{i}" for i in range(PLAYERS_PER_USER)]
        for player in self.players:
            if not _funded.ensure(self, player):
                raise StopUser()

    def _operations(self) -> list[pb.BatchOperation]:
        ops: list[pb.BatchOperation] = []
        while len(ops) < BATCH_OPS:
            player = self.rng.choice(self.players)
            round_id = new_key("xr")
            amount = self.rng.randint(BET_MIN_MINOR, BET_MAX_MINOR)
            ops.append(pb.BatchOperation(bet=pb.BetRequest(
                player_id=player, currency="USD", amount=amount, game_id=GAME_ID,
                round_id=round_id, idempotency_key=new_key("xbet"))))
            if len(ops) < BATCH_OPS and self.rng.random() < WIN_SHARE:
                ops.append(pb.BatchOperation(win=pb.WinRequest(
                    player_id=player, currency="USD", amount=amount * 2, game_id=GAME_ID,
                    round_id=round_id, idempotency_key=new_key("xwin"))))
        return ops

    @task
    def batch(self) -> None:
        ops = self._operations()
        atomic = self.rng.random() < ATOMIC_SHARE
        try:
            reply = self.call_raw("ExecuteBatch", pb.ExecuteBatchRequest(
                operations=ops, atomic=atomic), scope="game")
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                self._give_up()
            return
        self._judge(ops, reply.results, atomic=atomic)

    def _give_up(self) -> None:
        """The wallet has no ExecuteBatch: nothing this scenario measures can run."""
        if not _ops["gave_up"]:
            log.error("the wallet answers UNIMPLEMENTED to ExecuteBatch: it does not serve the "
                      "batch RPC yet; stopping the run (it fails the thresholds)")
            _ops["gave_up"] = 1
        thresholds.fire_check(self.environment, "ExecuteBatch served",
                              "the wallet does not implement ExecuteBatch (UNIMPLEMENTED)")
        runner = self.environment.runner
        if runner is not None:
            # Later, from another greenlet: quitting the runner kills the users' greenlets,
            # this one included, and it should end by its own StopUser first.
            gevent.spawn_later(QUIT_DELAY_S, runner.quit)
        raise StopUser()

    def _judge(self, ops: list[pb.BatchOperation], results: Any, *, atomic: bool) -> None:
        if len(results) != len(ops):
            thresholds.fire_check(self.environment, "batch result count",
                                  "a batch answered another number of results than operations")
            return
        errors = 0
        for op, result in zip(ops, results, strict=True):
            kind = op.WhichOneof("operation")
            outcome = result.WhichOneof("outcome")
            _ops["answered"] += 1
            if outcome == "error":
                errors += 1
                self._op_error(kind, result.error)
            elif outcome != kind:
                thresholds.fire_check(self.environment, "batch result kind",
                                      "a result is not of its operation's kind")
        if atomic and errors not in (0, len(ops)):
            thresholds.fire_check(self.environment, "atomic batch",
                                  "an atomic batch has both results and errors")
        if errors and not atomic:
            self._top_up_broke(ops, results)

    def _op_error(self, kind: str, error: pb.BatchError) -> None:
        if error.reason in OP_REJECTIONS:
            _ops["rejected"] += 1
            return
        self.environment.events.request.fire(
            request_type="batch-op", name=f"{kind} in batch", response_time=0,
            response_length=0, context={},
            exception=Exception(f"{error.code} {error.reason}: "
                                f"{error.message[:ERROR_TEXT_MAX_CHARS]}"))

    def _top_up_broke(self, ops: list[pb.BatchOperation], results: Any) -> None:
        """Players refused for funds get one deposit each, so they keep playing."""
        broke = {op.bet.player_id for op, r in zip(ops, results, strict=True)
                 if r.WhichOneof("outcome") == "error" and r.error.reason == "INSUFFICIENT_FUNDS"
                 and op.WhichOneof("operation") == "bet"}
        for player in broke:
            _funded.top_up(self, player)
