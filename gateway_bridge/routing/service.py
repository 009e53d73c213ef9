"""The router: which PSP a payment goes to, and what each outcome teaches it
(docs/ROUTING.md). The rules and the learning are pure (rules.py, learning.py); this reads
and writes the evidence every bridge replica shares, and takes health (breakers, probes)
from the wiring."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping

import asyncpg

from gateway_bridge import metrics
from gateway_bridge.routing import store
from gateway_bridge.routing.learning import Health, rank
from gateway_bridge.routing.rules import (
    Eligible,
    NoRoute,
    RouteRequest,
    RoutingDecision,
    eligible,
)
from gateway_bridge.routing.settings import RoutingSettings

log = logging.getLogger("gateway_bridge.routing")


class Router:
    def __init__(self, *, pool: asyncpg.Pool, settings: RoutingSettings,
                 health: Callable[[str], Health], acquire_timeout_ms: int,
                 rng: random.Random | None = None) -> None:
        self._pool = pool
        self._settings = settings
        self._health = health
        self._acquire_timeout_s = acquire_timeout_ms / 1000
        self._rng = rng or random.Random()

    @property
    def enabled(self) -> bool:
        return self._settings.enabled

    @property
    def attempts_max(self) -> int:
        return self._settings.attempts_max

    async def decide(self, request: RouteRequest, *, closed_loop: str | None = None,
                     unable: Mapping[str, str] | None = None) -> RoutingDecision:
        """The PSPs to try, best first. NoRoute (refused before anything is stored) when no
        rule covers the payment, or the PSP it pins is not eligible. `closed_loop`: the PSP
        a payout should go back to (where the player's money came from), first when the
        rules allow it and it is not out of routing. `unable`: PSPs that can't take this
        request as sent, each with the field that stops it (NoRoute naming it when no other
        is eligible)."""
        unable = unable or {}
        allowed = eligible(self._settings.rules, request)
        able = tuple(c for c in allowed.candidates if c.psp not in unable)
        if not able:
            why = sorted((unable[c.psp], c.psp) for c in allowed.candidates)
            raise NoRoute("no PSP eligible for this payment can take it as sent ("
                          + "; ".join(f"{psp}: {field}" for field, psp in why) + ")",
                          field=why[0][0])
        allowed = Eligible(allowed.rule, able)
        psps = [c.psp for c in allowed.candidates]
        if request.pinned_psp:
            return RoutingDecision(allowed.rule, (request.pinned_psp,),
                                   (f"{request.pinned_psp}: named by the cashier",), pinned=True)
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            tallies = await store.tallies(conn, psps, method=request.method,
                                          currency=request.currency)
        ranking = rank(allowed.candidates, tallies, {p: self._health(p) for p in psps},
                       policy=self._settings.policy, now_s=0.0, rng=self._rng)
        if not ranking.order:
            # Every eligible PSP is down: the first one answers for all of them.
            return RoutingDecision(allowed.rule, (psps[0],), ranking.reasons)
        order, reasons = ranking.order, ranking.reasons
        if closed_loop in order and order[0] != closed_loop:
            order = (closed_loop, *(p for p in order if p != closed_loop))
            reasons = (*reasons, f"{closed_loop}: first, closed loop (the player's deposits "
                                 "came through it)")
        elif closed_loop is not None and closed_loop in psps and closed_loop not in order:
            reasons = (*reasons, f"{closed_loop}: not first although the player deposited "
                                 "with it (out of routing)")
        return RoutingDecision(allowed.rule, order, reasons)

    async def record(self, conn: asyncpg.Connection, *, psp: str, method: str, currency: str,
                     success: bool) -> None:
        """One outcome of a payment at `psp` (on the caller's connection and transaction, so
        it counts once with the state it comes with)."""
        if not self.enabled:
            return
        await store.record_outcome(conn, psp=psp, method=method, currency=currency,
                                   success=success,
                                   half_life_s=self._settings.policy.half_life_s)
        metrics.ROUTING_OUTCOMES.labels(psp, "success" if success else "failure").inc()
