"""The FX pins, read and written (fx/queries.py)."""

from __future__ import annotations

import asyncpg

from gateway_bridge.fx import queries as q
from gateway_bridge.fx.model import ChargebackPin, RatePin


async def pin_fx_rate(conn: asyncpg.Connection, *, wallet_key: str, payment_id: str,
                      paid_currency: str, wallet_currency: str, pin: RatePin) -> None:
    """Pins `pin` for `wallet_key` unless a rate is pinned already (the first one stays)."""
    await conn.execute(q.PIN_FX_RATE, wallet_key, payment_id, paid_currency, wallet_currency,
                       pin.rate, pin.spread_bps, pin.source, pin.as_of)


async def repin_fx_rate(conn: asyncpg.Connection, *, wallet_key: str, pin: RatePin,
                        replacing: RatePin) -> None:
    """Replaces the pin `replacing` (judged abandoned) by `pin`; a no-op if it changed."""
    await conn.execute(q.REPIN_FX_RATE, wallet_key, pin.rate, pin.spread_bps, pin.source,
                       pin.as_of, replacing.pinned_at)


async def fx_rate_pin(conn: asyncpg.Connection, wallet_key: str) -> RatePin | None:
    row = await conn.fetchrow(q.FX_RATE_PIN, wallet_key)
    if row is None:
        return None
    return RatePin(rate=row["rate"], spread_bps=row["spread_bps"], source=row["source"],
                   as_of=row["as_of"], pinned_at=row["pinned_at"])


async def pin_fx_chargeback(conn: asyncpg.Connection, *, wallet_key: str, payment_id: str,
                            pin: ChargebackPin) -> None:
    """Pins the dispute's debit unless one is pinned already (the first one stays)."""
    await conn.execute(q.PIN_FX_CHARGEBACK, wallet_key, payment_id, pin.paid_minor,
                       pin.debit_minor)


async def fx_chargeback_pin(conn: asyncpg.Connection, wallet_key: str) -> ChargebackPin | None:
    row = await conn.fetchrow(q.FX_CHARGEBACK_PIN, wallet_key)
    return None if row is None else ChargebackPin(paid_minor=row["paid_minor"],
                                                  debit_minor=row["debit_minor"])


async def fx_chargebacks_pinned(conn: asyncpg.Connection, *, payment_id: str,
                                except_key: str) -> ChargebackPin:
    """The sums pinned by the payment's other disputes."""
    row = await conn.fetchrow(q.FX_CHARGEBACKS_PINNED, payment_id, except_key)
    return ChargebackPin(paid_minor=row["paid_minor"], debit_minor=row["debit_minor"])


async def unpin_fx(conn: asyncpg.Connection, wallet_key: str) -> None:
    """Forgets what was pinned for `wallet_key` (the wallet recorded nothing under it)."""
    await conn.execute(q.UNPIN_FX, wallet_key)
