"""Bonus traffic: grants, bets that spend and wager bonus funds, wins, forfeits, lookups.

Each user is a small bonus engine for its own handful of players (so it knows which bonus
ids it granted): it grants bonuses with a wagering requirement, some expiring within seconds
so the wallet's expiry sweep runs under load; bets small amounts on wallets funded with
little cash, so the stake goes cash first, then bonus, and counts toward wagering (a met
requirement converts the bonus to cash); sometimes wins the round; forfeits bonuses; and
reads GetBonuses.

Expected rejections (tagged, not failures): INSUFFICIENT_FUNDS on a bet once cash and bonus
are spent; BONUS_NOT_ACTIVE on a forfeit of a bonus that was converted, expired or
forfeited meanwhile. Checks: a bet's cash + bonus split equals its stake; no bonus shows a
negative balance.

    locust -f loadtests/locustfiles/bonus.py --headless -u 20 -r 10 -t 30s \\
        --host grpc://127.0.0.1:50051      # WALLET_CALLERS_FILE=.run/callers.json
"""

from __future__ import annotations

import collections
import itertools
import random
from datetime import UTC, datetime, timedelta

from locust import constant, task
from wallet.v1 import wallet_service_pb2 as pb

from loadtests import thresholds
from loadtests.grpc_user import FundedPlayers, GrpcUser, new_key, run_id

thresholds.install(fail_ratio_max=0.01, p99_ms_max=1000)

PLAYERS_PER_USER = 8
# Little cash, so most stakes reach the bonus bucket.
FUNDING_MINOR = 2_000
GRANT_MIN_MINOR, GRANT_MAX_MINOR = 1_000, 5_000
# Wagering requirement as a multiple of the grant; 0 converts on the first bet.
WAGERING_MULTIPLES = (0, 1, 3, 5)
SHORT_EXPIRY_SHARE = 0.1
SHORT_EXPIRY_S, LONG_EXPIRY_S = 5, 86_400
BET_MIN_MINOR, BET_MAX_MINOR = 100, 1_500
WIN_AFTER_BET_SHARE = 0.3
# Bonus ids a user remembers per player for forfeits; older ones are simply forgotten.
BONUSES_TRACKED_MAX = 16
GAME_ID = "slots-bonus"
BET_REJECTIONS = frozenset({"INSUFFICIENT_FUNDS"})
FORFEIT_REJECTIONS = frozenset({"BONUS_NOT_ACTIVE"})

_funded = FundedPlayers(amount_minor=FUNDING_MINOR)
_user_numbers = itertools.count()


class BonusTraffic(GrpcUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = random.Random()
        number = next(_user_numbers)
        self.players = [f"lt-{run_id()}-b{number}-{i}" for i in range(PLAYERS_PER_USER)]
        self.bonuses: dict[str, collections.deque[str]] = {
            p: collections.deque(maxlen=BONUSES_TRACKED_MAX) for p in self.players}

    def _player(self) -> str | None:
        player = self.rng.choice(self.players)
        return player if _funded.ensure(self, player) else None

    @task(3)
    def grant(self) -> None:
        player = self._player()
        if player is None:
            return
        amount = self.rng.randint(GRANT_MIN_MINOR, GRANT_MAX_MINOR)
        expiry_s = SHORT_EXPIRY_S if self.rng.random() < SHORT_EXPIRY_SHARE else LONG_EXPIRY_S
        request = pb.GrantBonusRequest(
            player_id=player, currency="USD", amount=amount,
            wagering_requirement=amount * self.rng.choice(WAGERING_MULTIPLES),
            idempotency_key=new_key("grant"))
        request.expires_at.FromDatetime(datetime.now(UTC) + timedelta(seconds=expiry_s))
        granted = self.call("GrantBonus", request, scope="bonus")
        if granted is not None:
            self.bonuses[player].append(granted.bonus_id)

    @task(10)
    def bet(self) -> None:
        player = self._player()
        if player is None:
            return
        amount = self.rng.randint(BET_MIN_MINOR, BET_MAX_MINOR)
        round_id = new_key("br")
        placed = self.call("Bet", pb.BetRequest(
            player_id=player, currency="USD", amount=amount, game_id=GAME_ID,
            round_id=round_id, idempotency_key=new_key("bbet")),
            scope="game", expect=BET_REJECTIONS)
        if placed is None:
            return
        if placed.cash_amount + placed.bonus_amount != amount:
            thresholds.fire_check(self.environment, "bet split",
                                  "cash + bonus parts differ from the stake")
        if self.rng.random() < WIN_AFTER_BET_SHARE:
            self.call("Win", pb.WinRequest(
                player_id=player, currency="USD", amount=amount * 2, game_id=GAME_ID,
                round_id=round_id, idempotency_key=new_key("bwin")), scope="game")

    @task(2)
    def forfeit(self) -> None:
        player = self.rng.choice(self.players)
        if not self.bonuses[player]:
            return
        self.call("ForfeitBonus", pb.ForfeitBonusRequest(
            bonus_id=self.bonuses[player].popleft(), idempotency_key=new_key("forfeit")),
            scope="bonus", expect=FORFEIT_REJECTIONS)

    @task(2)
    def list_bonuses(self) -> None:
        player = self._player()
        if player is None:
            return
        listed = self.call("GetBonuses", pb.GetBonusesRequest(player_id=player, currency="USD"),
                           scope="bonus")
        if listed is None:
            return
        if any(b.balance < 0 for b in listed.bonuses):
            thresholds.fire_check(self.environment, "bonus balance",
                                  "a bonus shows a negative balance")
