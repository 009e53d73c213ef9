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

from gateway_bridge.risk import rules, store
from gateway_bridge.risk.rules import Outcome, RiskFacts, RiskPolicy, RuleResult, Screening
from gateway_bridge.shared.terms import Direction

log = logging.getLogger("gateway_bridge.risk")
# The scorer's answer is small; a larger body is treated as a failure, not read whole.
SCORING_BODY_MAX_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """What is screened: one stored payment as the rules see it (payments/ builds it; a
    converted deposit comes in the wallet's currency)."""

    payment_id: str
    direction: Direction
    player_id: str
    currency: str
    amount_minor: int
    psp: str
    method: str
    instrument_id: str = ""
    country: str = ""


class RiskService:
    def __init__(self, *, pool: asyncpg.Pool, policy: RiskPolicy,
                 acquire_timeout_ms: int) -> None:
        self._pool = pool
        self._acquire_timeout_s = acquire_timeout_ms / 1000
        self.policy = policy
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def stored(self, payment_id: str) -> Screening | None:
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            found = await store.decision(conn, payment_id)
        return None if found is None else found

    async def screen(self, p: Subject) -> Screening:
        """The payment's decision: the stored one, or a new one made and stored now."""
        if not self.policy.enabled:
            return Screening(payment_id=p.payment_id, outcome=Outcome.ALLOW, results=())
        found = await self.stored(p.payment_id)
        if found is not None:
            return found
        facts = await self._facts(p)
        results = rules.evaluate(self.policy, facts)
        scoring: dict[str, Any] | None = None
        if self.policy.scoring_url:
            result, scoring = await self._score(p, facts)
            results.append(result)
        outcome = rules.strictest(results)
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            # The first decision stays (ON CONFLICT DO NOTHING): what comes back is it.
            stored = await store.insert_decision(
                conn, payment_id=p.payment_id, direction=p.direction, player_id=p.player_id,
                currency=p.currency, amount_minor=p.amount_minor,
                instrument_id=facts.instrument_id, country=facts.country, outcome=outcome,
                results=results, scoring=scoring,
                review_status="pending" if outcome is Outcome.REVIEW else None)
        screening = stored
        if screening.outcome is not Outcome.ALLOW:
            log.info("risk decision", extra={
                "payment_id": p.payment_id, "decision": screening.outcome.value,
                "reasons": [r.code for r in screening.reasons]})
        return screening

    async def _facts(self, p: Subject) -> RiskFacts:
        policy, instrument = self.policy, p.instrument_id
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            player = await store.player_velocity(
                conn, player_id=p.player_id, direction=p.direction, currency=p.currency,
                window_s=policy.window_s, except_payment=p.payment_id)
            by_instrument, others = store.Velocity(0, 0), 0
            if instrument:
                by_instrument = await store.instrument_velocity(
                    conn, instrument_id=instrument, direction=p.direction,
                    currency=p.currency, window_s=policy.window_s,
                    except_payment=p.payment_id)
                others = await store.instrument_other_players(
                    conn, instrument_id=instrument, player_id=p.player_id,
                    window_s=policy.instrument_players_window_s)
            deposited = wagered = 0
            if p.direction is Direction.WITHDRAWAL and policy.wagering_percent_min:
                deposited, wagered = await store.wagering(
                    conn, player_id=p.player_id, currency=p.currency,
                    window_s=policy.wagering_window_s)
        return RiskFacts(
            direction=p.direction, player_id=p.player_id, currency=p.currency,
            amount_minor=p.amount_minor, instrument_id=instrument, country=p.country,
            player_attempts=player.attempts, player_amount_minor=player.amount_minor,
            instrument_attempts=by_instrument.attempts,
            instrument_amount_minor=by_instrument.amount_minor,
            instrument_other_players=others, deposited_minor=deposited,
            wagered_minor=wagered)

    async def _score(self, p: Subject,
                     facts: RiskFacts) -> tuple[RuleResult, dict[str, Any]]:
        """Ask the external scorer. Any failure (timeout, refused connection, non-2xx,
        a body without a score in range) gives the fail-safe answer and is recorded."""
        body = {"payment_id": p.payment_id, "direction": p.direction.value, "player_id": p.player_id,
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
