"""Screening: gather the facts about a stored payment, run the rules (and the optional
external scorer), store the decision once, and read it back.

A payment is screened once. The decision row is keyed by payment id and inserted with ON
CONFLICT DO NOTHING, so a retried cashier request, the status sync resuming a half-done
withdrawal, or two concurrent retries all end with the first decision, never a second one
that would count this payment against itself.

Velocity counts are read without a lock: two simultaneous requests of one player may both
see the count below a limit. The limits are a brake on bursts, not a ledger invariant; the
cost of serializing every player's cashier requests is not worth one extra attempt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import orjson

from gateway_bridge.payments.model import Direction
from gateway_bridge.payments.store import Payment
from gateway_bridge.risk import queries as q
from gateway_bridge.risk import rules
from gateway_bridge.risk.rules import Outcome, RiskFacts, RiskPolicy, RuleResult

log = logging.getLogger("gateway_bridge.risk")
# The scorer's answer is small; a larger body is treated as a failure, not read whole.
SCORING_BODY_MAX_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Screening:
    """A stored decision about one payment."""

    payment_id: str
    outcome: Outcome
    results: tuple[RuleResult, ...]
    review_status: str | None = None
    scoring: dict[str, Any] | None = None

    @property
    def held(self) -> bool:
        """Waiting for support: nothing goes to the PSP until approved."""
        return self.outcome is Outcome.REVIEW and self.review_status == "pending"

    @property
    def rejected(self) -> bool:
        return self.outcome is Outcome.REVIEW and self.review_status == "rejected"

    @property
    def reasons(self) -> list[RuleResult]:
        return rules.reasons(list(self.results))

    def view(self) -> dict[str, Any]:
        view: dict[str, Any] = {"decision": self.outcome.value,
                                "reasons": [r.to_json() for r in self.reasons]}
        if self.review_status:
            view["review"] = self.review_status
        return view

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Screening:
        results = tuple(RuleResult(r["code"], Outcome(r["outcome"]), r["message"])
                        for r in row["rules"])
        return cls(payment_id=row["payment_id"], outcome=Outcome(row["decision"]),
                   results=results, review_status=row["review_status"],
                   scoring=row["scoring"])


def instrument_of(p: Payment) -> str:
    return str(p.request.get("instrument_id") or "")


def country_of(p: Payment) -> str:
    return str(p.request.get("country") or "")


class RiskService:
    def __init__(self, *, pool: asyncpg.Pool, policy: RiskPolicy) -> None:
        self._pool = pool
        self.policy = policy
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def stored(self, payment_id: str) -> Screening | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(q.DECISION, payment_id)
        return Screening.from_row(row) if row else None

    async def screen(self, p: Payment) -> Screening:
        """The payment's decision: the stored one, or a new one made and stored now."""
        if not self.policy.enabled:
            return Screening(payment_id=p.id, outcome=Outcome.ALLOW, results=())
        found = await self.stored(p.id)
        if found is not None:
            return found
        facts = await self._facts(p)
        results = rules.evaluate(self.policy, facts)
        scoring: dict[str, Any] | None = None
        if self.policy.scoring_url:
            result, scoring = await self._score(p, facts)
            results.append(result)
        outcome = rules.strictest(results)
        async with self._pool.acquire() as conn:
            await conn.execute(
                q.INSERT_DECISION, p.id, p.direction.value, p.player_id, p.currency,
                p.amount_minor, facts.instrument_id or None, facts.country or None,
                outcome.value, [r.to_json() for r in results], scoring,
                "pending" if outcome is Outcome.REVIEW else None)
            row = await conn.fetchrow(q.DECISION, p.id)
        assert row is not None, "risk decision vanished after insert"
        screening = Screening.from_row(row)
        if screening.outcome is not Outcome.ALLOW:
            log.info("risk decision", extra={
                "payment_id": p.id, "decision": screening.outcome.value,
                "reasons": [r.code for r in screening.reasons]})
        return screening

    async def _facts(self, p: Payment) -> RiskFacts:
        policy, instrument = self.policy, instrument_of(p)
        async with self._pool.acquire() as conn:
            player = await conn.fetchrow(q.PLAYER_VELOCITY, p.player_id, p.direction.value,
                                         p.currency, policy.window_s, p.id)
            assert player is not None
            by_instrument: dict[str, int] = {"attempts": 0, "amount_minor": 0}
            others = 0
            if instrument:
                row = await conn.fetchrow(q.INSTRUMENT_VELOCITY, instrument,
                                          p.direction.value, p.currency, policy.window_s,
                                          p.id)
                assert row is not None
                by_instrument = dict(row)
                others = await conn.fetchval(q.INSTRUMENT_OTHER_PLAYERS, instrument,
                                             p.player_id, policy.instrument_players_window_s)
            deposited = wagered = 0
            if p.direction is Direction.WITHDRAWAL and policy.wagering_percent_min:
                money = await conn.fetchrow(q.WAGERING, p.player_id, p.currency,
                                            policy.wagering_window_s)
                assert money is not None
                deposited, wagered = money["deposited_minor"], money["wagered_minor"]
        return RiskFacts(
            direction=p.direction, player_id=p.player_id, currency=p.currency,
            amount_minor=p.amount_minor, instrument_id=instrument, country=country_of(p),
            player_attempts=player["attempts"], player_amount_minor=player["amount_minor"],
            instrument_attempts=by_instrument["attempts"],
            instrument_amount_minor=by_instrument["amount_minor"],
            instrument_other_players=others, deposited_minor=deposited,
            wagered_minor=wagered)

    async def _score(self, p: Payment,
                     facts: RiskFacts) -> tuple[RuleResult, dict[str, Any]]:
        """Ask the external scorer. Any failure (timeout, refused connection, non-2xx,
        a body without a score in range) gives the fail-safe answer and is recorded."""
        body = {"payment_id": p.id, "direction": p.direction.value, "player_id": p.player_id,
                "amount_minor": p.amount_minor, "currency": p.currency, "psp": p.psp,
                "method": p.method, "instrument_id": facts.instrument_id,
                "country": facts.country, "player_attempts": facts.player_attempts,
                "instrument_other_players": facts.instrument_other_players}
        try:
            score = await self._post_score(body)
        except TimeoutError:
            return self._failed("timeout")
        except aiohttp.ClientError as err:
            return self._failed(f"request failed: {type(err).__name__}")
        except ValueError as err:
            return self._failed(str(err))
        return rules.score_result(self.policy, score), {"score": score}

    def _failed(self, why: str) -> tuple[RuleResult, dict[str, Any]]:
        log.warning("risk scoring failed", extra={"error": why})
        return rules.scoring_failed(self.policy, why), {"error": why}

    async def _post_score(self, body: dict[str, Any]) -> float:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.policy.scoring_timeout_ms / 1000))
        async with self._http.post(self.policy.scoring_url, data=orjson.dumps(body),
                                   headers={"Content-Type": "application/json"}) as r:
            if r.status // 100 != 2:
                raise ValueError(f"HTTP {r.status}")
            raw = await r.content.read(SCORING_BODY_MAX_BYTES + 1)
        if len(raw) > SCORING_BODY_MAX_BYTES:
            raise ValueError("answer too large")
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ValueError("answer is not JSON") from None
        score = answer.get("score") if isinstance(answer, dict) else None
        if (not isinstance(score, int | float) or isinstance(score, bool)
                or not rules.SCORE_MIN <= score <= rules.SCORE_MAX):
            raise ValueError(f"no score in {rules.SCORE_MIN}..{rules.SCORE_MAX}")
        return float(score)
