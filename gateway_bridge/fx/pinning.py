"""Credit pinning: the rate a converted deposit is credited at, and the wallet debit of each
of its chargebacks, fixed before the wallet call and kept for every retry (docs/FX.md).

A rate is taken fresh (no fresh rate, stale or provider down: FxNotNow, and the event waits
like one for an unreachable wallet, never credited at a stale rate) and pinned under the
wallet idempotency key (bridge.fx_rate_pins, its own committed write) before the call, so a
retry after an unanswered call sends the identical request. A pin is re-priced only when it
aged out and the wallet recorded nothing under its key, and dropped (`unpin`) when the wallet
definitively refused. A chargeback reported in the paid currency takes back the same share
of the credit: its debit is pinned per wallet key the same way (bridge.fx_chargeback_pins),
computed against what the payment's other disputes pinned, so a retry sends the same debit
and all of them together never take more than was credited
(service_kit.fx.share_not_yet_taken).

Pins are written on a pooled connection of their own, at once committed: the caller's
transaction holds the payment row, and the pin must outlive a rollback of it. They are then
read back on the caller's connection: whoever wrote first wins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import asyncpg

from gateway_bridge.fx import store
from gateway_bridge.fx.model import ChargebackPin, RatePin
from gateway_bridge.fx.rates import FxRates
from gateway_bridge.shared.errors import FxRefused, FxUnavailable
from gateway_bridge.wallet.client import WalletClient, WalletRefused
from service_kit import fx

log = logging.getLogger("gateway_bridge.fx.pinning")

# A pinned rate older than the maximum age is re-priced only once the call made with it is
# surely over: its deadline (the wallet timeout) times this.
_PIN_CALL_OVER_FACTOR = 2


class FxNotNow(Exception):
    """No fresh rate for a converted credit: the event waits and is retried."""


class FxNotCredited(Exception):
    """A converted credit that can never go through as it stands (worth nothing, above the
    cap): the event goes dead for support."""


class CreditPins:
    def __init__(self, *, pool: asyncpg.Pool, rates: FxRates | None, wallet: WalletClient,
                 wallet_timeout_ms: int, acquire_timeout_ms: int,
                 clock: Callable[[], datetime]) -> None:
        self._pool = pool
        self._rates = rates
        self._wallet = wallet
        self._wallet_timeout_ms = wallet_timeout_ms
        self._acquire_timeout_s = acquire_timeout_ms / 1000
        self._clock = clock

    async def rate(self, conn: asyncpg.Connection, *, key: str, payment_id: str,
                   paid_currency: str, wallet_currency: str) -> RatePin:
        """The rate the credit under `key` goes with: the one pinned before, or a fresh one
        pinned now. No other connection is held while the provider is asked; the write of
        the pin (read back on `conn`) also restarts the caller's transaction's idle clock
        before the wallet call. FxNotNow when no fresh rate is at hand."""
        pinned = await store.fx_rate_pin(conn, key)
        if pinned is not None and not await self._abandoned(pinned, key):
            return pinned
        fresh = await self._fresh(paid_currency, wallet_currency)
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as own:
            if pinned is None:
                await store.pin_fx_rate(own, wallet_key=key, payment_id=payment_id,
                                        paid_currency=paid_currency,
                                        wallet_currency=wallet_currency, pin=fresh)
            else:
                await store.repin_fx_rate(own, wallet_key=key, pin=fresh, replacing=pinned)
        now_pinned = await store.fx_rate_pin(conn, key)
        if now_pinned is None:
            raise AssertionError(f"the rate pinned for {key} vanished")
        return now_pinned

    async def _fresh(self, paid_currency: str, wallet_currency: str) -> RatePin:
        if self._rates is None:
            raise FxNotNow("currency conversion is not enabled (BRIDGE_FX_RATES_URL)")
        try:
            rate = await self._rates.rate(paid_currency, wallet_currency)
        except (FxUnavailable, FxRefused) as err:
            raise FxNotNow(f"{err.code}: {err.message}") from None
        return RatePin(rate=rate.text, spread_bps=self._rates.spread_bps, source=rate.source,
                       as_of=rate.as_of)

    async def _abandoned(self, pin: RatePin, key: str) -> bool:
        """A pin whose rate is older than the maximum age, whose wallet call is surely over
        (its deadline passed twice over), and under whose key the wallet recorded nothing:
        nothing binds its retry to that rate any more, so it gets a fresh one. A pin within
        the age is kept as it is, without asking the wallet. WalletUnavailable when the
        wallet can't be asked (the event is retried: sending the old rate blind could record
        it)."""
        if self._rates is None:
            return False
        now = self._clock()
        if (now - pin.as_of).total_seconds() * 1000 <= self._rates.age_max_ms:
            return False
        call_over_ms = self._wallet_timeout_ms * _PIN_CALL_OVER_FACTOR
        if pin.pinned_at is None or \
                (now - pin.pinned_at).total_seconds() * 1000 <= call_over_ms:
            return False
        try:
            return not await self._wallet.recorded(key=key)
        except WalletRefused as err:
            # The wallet won't say (this token may not read journal entries): keep the pin,
            # which is always safe, if stale.
            log.warning("could not ask the wallet about a stale rate pin; keeping it",
                        extra={"reason": err.reason})
            return False

    async def debit(self, conn: asyncpg.Connection, *, key: str, payment_id: str,
                    credited_minor: int, credited_paid_minor: int, paid_minor: int,
                    charged_back_paid_minor: int,
                    charged_back_wallet_minor: int) -> ChargebackPin:
        """The wallet debit of the dispute under `key`: pinned before, or computed and
        pinned now.

        Computed against what the payment's other disputes pinned (applied, or sent and
        still being retried), not against those applied so far: the dispute's slice starts
        where theirs end, and it takes the cumulative share less what they take. A dispute
        whose wallet call went unanswered thus keeps its debit however the others are
        ordered, and all of them together never take more than was credited. The payment
        row lock the caller holds serializes the disputes of one payment."""
        pinned = await store.fx_chargeback_pin(conn, key)
        if pinned is not None:
            return pinned
        others = await store.fx_chargebacks_pinned(conn, payment_id=payment_id,
                                                   except_key=key)
        # max(): disputes applied before pins existed are only in the payment's own sums.
        debit = fx.share_not_yet_taken(
            credited_minor, whole=credited_paid_minor, part=paid_minor,
            part_before=max(charged_back_paid_minor, others.paid_minor),
            taken_before=max(charged_back_wallet_minor, others.debit_minor))
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as own:
            await store.pin_fx_chargeback(own, wallet_key=key, payment_id=payment_id,
                                          pin=ChargebackPin(paid_minor=paid_minor,
                                                            debit_minor=debit))
        now_pinned = await store.fx_chargeback_pin(conn, key)
        if now_pinned is None:
            raise AssertionError(f"the debit pinned for {key} vanished")
        return now_pinned

    async def unpin(self, conn: asyncpg.Connection, key: str) -> None:
        """Forgets what was pinned under `key`: the wallet recorded nothing a retry must
        match, so the next attempt computes its request afresh."""
        await store.unpin_fx(conn, key)
