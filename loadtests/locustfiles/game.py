"""Game traffic: rounds of bet -> win on Zipf-skewed players, with some rollbacks.

Each user plays rounds back to back for players drawn from a bounded population with a Zipf
skew (a few hot players, a long tail), the shape real casino traffic has and the one that
finds hot-row contention. A player's wallet is opened and funded once per run (fixed keys,
so concurrent first rounds replay rather than double-fund); every bet, win and rollback has
its own idempotency key, and every round its own id.

A round: Bet; then a win (WIN_SHARE of rounds), a rollback of the bet (ROLLBACK_SHARE: the
game aborted the round), or nothing (a loss). INSUFFICIENT_FUNDS on a bet is expected for
the hottest players and is not a failure: the player is topped up and plays on.

    locust -f loadtests/locustfiles/game.py --headless -u 20 -r 10 -t 30s \\
        --host grpc://127.0.0.1:50051      # WALLET_CALLERS_FILE=.run/callers.json

Settings: LOADTEST_PLAYERS (default 1000), LOADTEST_ZIPF_EXPONENT (default 1.1).
"""

from __future__ import annotations

import random

import grpc
from locust import constant, task
from wallet.v1 import wallet_service_pb2 as pb

from loadtests import thresholds
from loadtests.grpc_user import (
    FundedPlayers,
    GrpcUser,
    ZipfPicker,
    env_float,
    env_int,
    error_reason,
    new_key,
    run_id,
)

thresholds.install(fail_ratio_max=0.01, p99_ms_max=1000)

PLAYERS = env_int("LOADTEST_PLAYERS", 1000, low=1, high=100_000)
ZIPF_EXPONENT = env_float("LOADTEST_ZIPF_EXPONENT", 1.1, low=0.0, high=3.0)
# Enough for a hot player's few thousand bets in a 30 s run before the first top-up.
FUNDING_MINOR = 5_000_000
BET_MIN_MINOR, BET_MAX_MINOR = 100, 5_000
# Return to player ~ WIN_SHARE * mean multiplier = 0.4 * 2.25 = 0.9, so balances drift down
# slowly, as they do in a casino, and top-ups happen now and then.
WIN_SHARE = 0.40
WIN_MULTIPLIER_MIN, WIN_MULTIPLIER_MAX = 0.5, 4.0
ROLLBACK_SHARE = 0.05
# Several games, so the house side spreads over several `house:<game_id>` accounts.
GAMES = ("slots-fruit", "slots-gems", "roulette-eu", "blackjack-6d")
BET_REJECTIONS = frozenset({"INSUFFICIENT_FUNDS"})

_picker = ZipfPicker(PLAYERS, ZIPF_EXPONENT)
_funded = FundedPlayers(amount_minor=FUNDING_MINOR)


class GamePlayer(GrpcUser):
    """A game server's view: rounds for many players, one after another."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = random.Random()

    def _player(self) -> str:
        return f"lt-{run_id()}-g{_picker.pick(self.rng.random())}"

    @task(20)
    def play_round(self) -> None:
        player = self._player()
        if not _funded.ensure(self, player):
            return
        game_id = self.rng.choice(GAMES)
        round_id = new_key("r")
        bet_key = new_key("bet")
        amount = self.rng.randint(BET_MIN_MINOR, BET_MAX_MINOR)
        try:
            placed = self.call_raw("Bet", pb.BetRequest(
                player_id=player, currency="USD", amount=amount, game_id=game_id,
                round_id=round_id, idempotency_key=bet_key), scope="game", expect=BET_REJECTIONS)
        except grpc.RpcError as error:
            if error_reason(error)[0] == "INSUFFICIENT_FUNDS":
                _funded.top_up(self, player)
            return
        if placed.cash_amount + placed.bonus_amount != amount:
            thresholds.fire_check(self.environment, "bet split",
                                  "cash + bonus parts differ from the stake")
        draw = self.rng.random()
        if draw < ROLLBACK_SHARE:
            self.call("Rollback", pb.RollbackRequest(
                player_id=player, currency="USD", game_id=game_id,
                bet_idempotency_key=bet_key, idempotency_key=new_key("rb")), scope="game")
        elif draw < ROLLBACK_SHARE + WIN_SHARE:
            multiplier = self.rng.uniform(WIN_MULTIPLIER_MIN, WIN_MULTIPLIER_MAX)
            self.call("Win", pb.WinRequest(
                player_id=player, currency="USD", amount=max(1, int(amount * multiplier)),
                game_id=game_id, round_id=round_id, idempotency_key=new_key("win")),
                scope="game")

    @task(1)
    def show_balance(self) -> None:
        """The lobby asks for the balance now and then (read path, no journal write)."""
        player = self._player()
        if _funded.ensure(self, player):
            self.call("GetBalance", pb.GetBalanceRequest(player_id=player, currency="USD"),
                      scope="game")
