"""Retry storms: the same idempotency key sent again and again, concurrently, and checked.

Each task builds one money-moving request (a bet, a bet larger than the balance so the
answer is a recorded rejection, a win, or a deposit), sends COPIES_CONCURRENT copies of it
at once (the unique-key race: one executes, the losers replay the winner), then
REPEATS_SEQUENTIAL more one after another (the Redis fast path, then Postgres). Every
answer must be identical to the others, apart from the `replay` flag; exactly one of them
may be the original execution. Sometimes the key is then sent with a different amount,
which must be refused with IDEMPOTENCY_KEY_REUSED (the same key never means two requests).

A difference is a broken invariant, reported as a failed request of type "check" (the
thresholds fail the run on any). Transport failures (UNAVAILABLE, DEADLINE_EXCEEDED) are
failures of their own and are left out of the comparison: such a call may or may not have
executed, which is exactly why the caller retries with the same key.

    locust -f loadtests/locustfiles/retry_storm.py --headless -u 20 -r 10 -t 30s \\
        --host grpc://127.0.0.1:50051      # WALLET_CALLERS_FILE=.run/callers.json
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

import gevent
import grpc
from gevent.pool import Group
from locust import constant, task
from wallet.v1 import wallet_service_pb2 as pb

from loadtests import thresholds
from loadtests.grpc_user import (
    FundedPlayers,
    GrpcUser,
    error_reason,
    new_key,
    run_id,
    weighted_choice,
)

thresholds.install(fail_ratio_max=0.01, p99_ms_max=1500)

# Copies in flight at once per storm: enough to lose the unique-key race several times;
# COPIES_CONCURRENT x users is the wallet's in-flight load, kept well under its 256 cap.
COPIES_CONCURRENT = 6
REPEATS_SEQUENTIAL = 2
KEY_REUSE_SHARE = 0.1
PLAYERS_PER_USER = 4
FUNDING_MINOR = 1_000_000
BET_MIN_MINOR, BET_MAX_MINOR = 100, 2_000
GAME_ID = "slots-storm"
# What a storm sends, with its share of the tasks.
KINDS = (("bet", 0.5), ("bet_too_big", 0.15), ("win", 0.2), ("deposit", 0.15))
STORM_REJECTIONS = frozenset({"INSUFFICIENT_FUNDS"})
REUSE_REJECTIONS = frozenset({"IDEMPOTENCY_KEY_REUSED"})
# Transport and capacity failures say nothing about the key: the call may or may not have
# executed. Any other answer is a recorded outcome and must replay identically.
TRANSPORT_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN})

_funded = FundedPlayers(amount_minor=FUNDING_MINOR)
_user_numbers = itertools.count()


@dataclass(frozen=True)
class Answer:
    """One answer reduced to what must be identical across replays."""

    outcome: bytes | tuple[str, str, tuple[tuple[str, str], ...]]
    replay: bool


def _answer(response: Any | None, error: grpc.RpcError | None) -> Answer | None:
    """None for a transport failure, which is not a recorded outcome."""
    if error is None:
        copy = type(response)()
        copy.CopyFrom(response)
        replay = copy.result.replay
        copy.result.replay = False
        return Answer(copy.SerializeToString(deterministic=True), replay)
    if error.code() in TRANSPORT_CODES:
        return None
    reason, metadata = error_reason(error)
    replay = metadata.pop("replay", "false") == "true"
    return Answer((error.code().name, reason, tuple(sorted(metadata.items()))), replay)


class RetryStorm(GrpcUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = random.Random()
        number = next(_user_numbers)
        self.players = [f"lt-{run_id()}-s{number}-{i}" for i in range(PLAYERS_PER_USER)]

    def _request(self, kind: str, player: str) -> tuple[str, str, Any]:
        """(method, scope, request) of one storm, with a fresh key."""
        key = new_key(kind)
        amount = self.rng.randint(BET_MIN_MINOR, BET_MAX_MINOR)
        if kind in ("bet", "bet_too_big"):
            if kind == "bet_too_big":
                amount = FUNDING_MINOR * 1000
            return "Bet", "game", pb.BetRequest(
                player_id=player, currency="USD", amount=amount, game_id=GAME_ID,
                round_id=new_key("sr"), idempotency_key=key)
        if kind == "win":
            return "Win", "game", pb.WinRequest(
                player_id=player, currency="USD", amount=amount, game_id=GAME_ID,
                round_id=new_key("sr"), idempotency_key=key)
        return "Deposit", "payments", pb.DepositRequest(
            player_id=player, currency="USD", amount=amount, psp="loadtest",
            psp_reference=key, idempotency_key=key)

    def _send(self, method: str, scope: str, request: Any) -> Answer | None:
        try:
            response = self.call_raw(method, request, scope=scope, expect=STORM_REJECTIONS)
        except grpc.RpcError as error:
            return _answer(None, error)
        return _answer(response, None)

    @task
    def storm(self) -> None:
        player = self.rng.choice(self.players)
        if not _funded.ensure(self, player):
            return
        kind = weighted_choice(self.rng.random(), KINDS)
        method, scope, request = self._request(kind, player)
        group = Group()
        wave = [group.spawn(self._send, method, scope, request) for _ in range(COPIES_CONCURRENT)]
        # Every call has its own deadline; this bound only guards against a stuck greenlet.
        gevent.joinall(wave, timeout=self.timeout_s * 2, raise_error=True)
        group.kill(block=False)
        answers = [g.value for g in wave]
        answers += [self._send(method, scope, request) for _ in range(REPEATS_SEQUENTIAL)]
        self._compare(method, answers)
        if self.rng.random() < KEY_REUSE_SHARE:
            self._reuse(method, scope, request)

    def _compare(self, method: str, answers: list[Answer | None]) -> None:
        recorded = [a for a in answers if a is not None]
        if len({a.outcome for a in recorded}) > 1:
            thresholds.fire_check(self.environment, f"{method} replay identical",
                                  "answers to one idempotency key differ")
        originals = sum(not a.replay for a in recorded)
        # With every answer recorded, one of them must be the execution itself; a lost
        # (transport-failed) call may have been it, so then zero originals is allowed.
        expected = (0, 1) if len(recorded) < len(answers) else (1,)
        if originals not in expected:
            thresholds.fire_check(self.environment, f"{method} executed once",
                                  f"{originals} answers claim to be the original execution")

    def _reuse(self, method: str, scope: str, request: Any) -> None:
        """The same key with a different amount must be refused, never executed."""
        changed = type(request)()
        changed.CopyFrom(request)
        changed.amount += 1
        try:
            self.call_raw(method, changed, scope=scope, expect=REUSE_REJECTIONS)
        except grpc.RpcError as error:
            if error.code() not in TRANSPORT_CODES and error_reason(error)[0] not in \
                    REUSE_REJECTIONS:
                thresholds.fire_check(self.environment, f"{method} key reuse",
                                      "a reused key was refused, but not as reused")
            return
        thresholds.fire_check(self.environment, f"{method} key reuse",
                              "a reused key with another amount was accepted")
