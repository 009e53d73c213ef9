"""The rows a batch writes set-based: gathered in memory as its operations run, written with
one statement (queries.FLUSH_BATCH) before the batch commits, or before anything in the
batch reads rows they would change.

Per operation the hot path then costs no Postgres round trip of its own: the batch pays a
constant few (lock, read, flush, commit) whatever its size. Journal ids are drawn from the
sequence up front (queries.BATCH_READ), so each operation knows its transaction id and can
answer before the rows exist; nothing is answered before the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from wallet_core.domain.ledger import BonusState, Draft
from wallet_core.domain.outcome import outcome_record
from wallet_core.storage import queries as q
from wallet_core.storage.repo import BetRow, rg_of


class KeysTaken(Exception):
    """Journal rows another connection committed first (same idempotency key, or a PSP
    reference credited meanwhile): the transaction must roll back. `indexes` are the
    operations' positions in the batch, so the use case can take them out."""

    def __init__(self, indexes: list[int]) -> None:
        super().__init__(f"journal rows taken meanwhile for operations {indexes}")
        self.indexes = indexes


class BatchWrites:
    """Rows waiting for the batch's one write statement."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._journal: list[tuple[Any, ...]] = []
        self._journal_index: dict[int, int] = {}  # journal id -> operation's batch index
        self._postings: list[tuple[int, str, str, int, str]] = []
        self._wallets: dict[int, tuple[int, int, int, str | None, bool]] = {}
        self._bonuses: dict[int, BonusState] = {}
        self._bets: list[tuple[Any, ...]] = []
        self._stakes: dict[tuple[int, str, str, str], list[int]] = {}

    def record(self, *, index: int, journal_id: int, caller: str, key: str, fingerprint: bytes,
               kind: str, draft: Draft, currency: str, outcome_fields: dict[str, Any],
               details: dict[str, str], rejection_reason: str | None = None,
               rejection_message: str | None = None) -> None:
        """What repo.record writes at once: the journal row, and unless it is a rejection,
        its postings, the wallet's balances and the bonuses the operation changed."""
        rejected = rejection_reason is not None
        outcome = outcome_record(currency=currency, fields=outcome_fields,
                                 balances=None if rejected else draft.balances(),
                                 message=rejection_message)
        self._journal.append((journal_id, caller, key, fingerprint, kind,
                              "rejected" if rejected else "ok", rejection_reason,
                              draft.wallet_id, currency, _json(outcome), _json(details),
                              draft.player_id))
        self._journal_index[journal_id] = index
        if rejected:
            return
        self._postings.extend((journal_id, p.account, p.currency or currency, p.amount_minor,
                               draft.player_id) for p in draft.postings())
        # Limits are written when an operation of the batch changed them (the latest wins,
        # and an earlier change in the batch is not undone by a later wallet write).
        before = self._wallets.get(draft.wallet_id)
        changed = draft.guard_changed or (before is not None and before[4])
        rg = rg_of(draft)
        self._wallets[draft.wallet_id] = (draft.cash, draft.bonus, draft.reserved,
                                          None if rg is None else _json(rg), changed)
        for b in draft.bonuses:
            if b.bonus_id in draft.changed_bonus_ids:
                self._bonuses[b.bonus_id] = b  # the latest state wins

    def bet(self, bet: BetRow) -> None:
        values = bet.values()
        self._bets.append((*values[:8], _json(bet.bonus_debits), _json(bet.wagered),
                           bet.player_id))
        stake = self._stakes.setdefault(
            (bet.wallet_id, bet.game_id, bet.round_id, bet.player_id), [0, 0])
        stake[0] += bet.cash_minor
        stake[1] += bet.bonus_minor

    async def flush(self, conn: asyncpg.Connection) -> None:
        """Write everything gathered so far (inside the batch's transaction) and start
        empty; KeysTaken when a journal row could not be inserted."""
        if not self._journal:
            return
        j, p, bonuses, bets = self._journal, self._postings, list(self._bonuses.values()), \
            self._bets
        wallets, stakes = list(self._wallets.items()), list(self._stakes.items())
        journal, postings, bet_rows = _columns(j, 12), _columns(p, 5), _columns(bets, 11)
        stake_keys = _columns([k for k, _ in stakes], 4)
        # Each table's player column comes last ($39-$42): see queries.FLUSH_BATCH.
        row = await conn.fetchrow(
            q.FLUSH_BATCH, *journal[:11], *postings[:4],
            [w for w, _ in wallets], *_columns([b for _, b in wallets], 3),
            [b.bonus_id for b in bonuses], [b.state for b in bonuses],
            [b.balance_minor for b in bonuses], [b.wagered_minor for b in bonuses],
            *bet_rows[:10], *stake_keys[:3], *_columns([s for _, s in stakes], 2),
            journal[11], postings[4], bet_rows[10], stake_keys[3],
            *_columns([b for _, b in wallets], 5)[3:])
        inserted = set(row["inserted"])
        missing = sorted(self._journal_index[r[0]] for r in j if r[0] not in inserted)
        self._reset()
        if missing:
            raise KeysTaken(missing)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Row tuples as `width` column lists, the shape unnest() takes."""
    return [[r[i] for r in rows] for i in range(width)]
