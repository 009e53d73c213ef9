"""A player as support sees them: every wallet's balances, latest journal entries and
responsible-gambling limits (from
the wallet, over gRPC with a read-only token), and their payments at the bridge with what
waits for support.

The wallet is the truth for balances; the bridge only knows the payments it carried. The
wallet has no "all wallets of a player" call, so each currency the bridge accepts is asked
for, and NOT_FOUND means the player has no wallet in it.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway_bridge.shared.money import EXPONENTS
from gateway_bridge.support import queries
from gateway_bridge.wallet.client import WalletClient, WalletRefused

PAYMENT_ROWS_MAX = 500


async def player_view(conn: asyncpg.Connection, wallet: WalletClient, player_id: str, *,
                      currencies: list[str], limit: int) -> dict[str, Any]:
    wallets: list[dict[str, Any]] = []
    for currency in currencies or sorted(EXPONENTS):
        try:
            balances = await wallet.balances_view(player_id=player_id, currency=currency)
        except WalletRefused as err:
            if err.code == "NOT_FOUND":
                continue
            raise
        entries = await wallet.transactions_view(player_id=player_id, currency=currency,
                                                 page_size=limit)
        found: dict[str, Any] = {"balances": balances, "transactions": entries}
        # Responsible-gambling limits and breaks (docs/COMPLIANCE.md), when any are set.
        limits = await wallet.limits_view(player_id=player_id, currency=currency)
        if {k: v for k, v in limits.items() if k != "timeZone" or v != "UTC"}:
            found["limits"] = limits
        wallets.append(found)
    payments = [dict(r) for r in await conn.fetch(queries.PLAYER_PAYMENTS, player_id,
                                                  min(limit, PAYMENT_ROWS_MAX))]
    return {"player_id": player_id, "wallets": wallets, "payments": payments,
            "waiting_for_support": [p["id"] for p in payments if p["attention"]]}
