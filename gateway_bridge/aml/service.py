"""AML monitoring at the cashier (docs/COMPLIANCE.md): every new payment is looked at with
the player's recent history; a rule's hit opens (or extends) a case, and a case of a rule
that holds keeps the player's withdrawals waiting until an analyst clears it."""

from __future__ import annotations

import logging

import asyncpg

from gateway_bridge import metrics
from gateway_bridge.aml import rules, store
from gateway_bridge.aml.rules import RULES, AmlFacts, AmlPolicy, CaseState
from gateway_bridge.risk import store as risk_store
from gateway_bridge.shared.terms import Direction

log = logging.getLogger("gateway_bridge.aml")


class AmlService:
    def __init__(self, *, pool: asyncpg.Pool, policy: AmlPolicy,
                 acquire_timeout_ms: int) -> None:
        # Every rule's counter exists from the start at 0: Prometheus' increase() ignores a
        # series' first sample, so a counter born at 1 would hide the first case.
        for rule in RULES:
            metrics.AML_CASES_OPENED.labels(rule)
        self._pool = pool
        self._policy = policy
        self._acquire_timeout_s = acquire_timeout_ms / 1000

    async def observe(self, *, payment_id: str, player_id: str, direction: Direction,
                      currency: str, amount_minor: int) -> list[int]:
        """The rules over a stored payment and the player's history; returns the cases it
        opened or joined."""
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn, \
                conn.transaction(isolation="read_committed"):
            await store.lock_player(conn, player_id)
            w = await store.window(conn, self._policy, player_id=player_id, currency=currency,
                                   payment_id=payment_id)
            deposited_minor = wagered_minor = 0
            if direction is Direction.WITHDRAWAL and self._policy.little_play_percent:
                # The wallet's journal: deposits and bets from anywhere, not just this bridge.
                deposited_minor, wagered_minor = await risk_store.wagering(
                    conn, player_id=player_id, currency=currency,
                    window_s=self._policy.little_play_window_s)
            hits = rules.evaluate(self._policy, AmlFacts(
                direction=direction, currency=currency, amount_minor=amount_minor,
                deposits_before_minor=w.cumulative_minor,
                deposits_in_structuring_window=w.recent, instruments_in_window=w.instruments,
                currencies_in_window=w.currencies, payment_id=payment_id,
                deposited_in_play_window_minor=deposited_minor,
                wagered_in_play_window_minor=wagered_minor))
            # A payment looked at again (a withdrawal before each payout attempt) adds
            # nothing to a rule that already named it, whatever became of that case.
            named = await store.rules_naming(conn, player_id, payment_id) if hits else set()
            found = []
            opened_rules = []
            for hit in hits:
                if hit.rule in named:
                    continue
                case_id, opened = await store.open_or_extend(conn, player_id=player_id,
                                                             hit=hit)
                if opened:
                    await store.add_history(conn, case_id, to=CaseState.OPEN, actor="rules",
                                            note=f"{hit.rule}: {hit.detail} ({payment_id})")
                    opened_rules.append((case_id, hit.rule))
                found.append(case_id)
        for case_id, rule in opened_rules:  # counted once committed
            metrics.AML_CASES_OPENED.labels(rule).inc()
            log.warning("aml case opened", extra={"case_id": case_id, "rule": rule})
        return found
