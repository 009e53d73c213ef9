"""The ledger checker behind `wallet-core check`: proves the books balance.

Invariants, each checked by one query in queries.py:
- per currency, all postings (player buckets + system accounts) sum to zero;
- every journal row's postings sum to zero per currency, and rejections have none;
- postings carry their transaction's currency (a converted deposit: also its paid
  currency, on system accounts only, matching the paid amount it records), and player
  postings name a wallet of it;
- every wallet bucket equals the sum of its postings;
- bonus and reserved are never negative, cash only after a chargeback;
- the bonus bucket equals its active bonuses, the reserved bucket its open withdrawals.
"""

from __future__ import annotations

import asyncpg

from wallet_core.storage import queries as q

_CHECKS: list[tuple[str, str]] = [
    ("currency does not sum to zero", q.CHECK_CURRENCY_SUMS),
    ("journal entry with unbalanced postings", q.CHECK_UNBALANCED_JOURNAL),
    ("rejected journal entry with postings", q.CHECK_REJECTED_WITH_POSTINGS),
    ("posting in a currency other than its transaction's", q.CHECK_POSTING_CURRENCY),
    ("converted deposit whose paid-currency postings differ from its record",
     q.CHECK_CONVERSIONS),
    ("player posting without a wallet of that currency", q.CHECK_ORPHAN_PLAYER_POSTINGS),
    ("bucket differs from the sum of its postings", q.CHECK_BUCKETS_VS_POSTINGS),
    ("negative bucket where it must not be", q.CHECK_NEGATIVE_BUCKETS),
    ("bonus bucket differs from its active bonuses", q.CHECK_BONUS_BUCKET),
    ("reserved bucket differs from its open withdrawals", q.CHECK_RESERVED_BUCKET),
]


async def check_ledger(conn: asyncpg.Connection) -> list[str]:
    """Return one readable line per problem found; an empty list means the ledger is sound."""
    problems: list[str] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for title, sql in _CHECKS:
            for row in await conn.fetch(sql):
                shown = ", ".join(f"{k}={v}" for k, v in row.items())
                problems.append(f"{title}: {shown}")
    return problems
