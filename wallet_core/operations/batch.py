"""The batch: one Postgres transaction and what its operations share while it runs.

Handed explicitly to every handler (handlers.py); a single call is a batch of one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from wallet_core.domain import commands as cmd
from wallet_core.domain.ledger import Draft
from wallet_core.storage.batch_writes import BatchWrites

# Bets and wins gather their rows for one set-based write per batch.
SET_BASED = frozenset({cmd.Bet, cmd.Win})
# Operations that find their wallet by withdrawal or bonus id and read it from Postgres, or
# (Exclude, Restrict) write other wallets of the player than the one they name: after one, the batch
# reads its wallets again.
BY_ID = (cmd.CommitWithdrawal, cmd.CancelWithdrawal, cmd.ReverseWithdrawal,
         cmd.ForfeitBonus, cmd.ExpireBonus, cmd.Exclude, cmd.Restrict)


@dataclass(slots=True)
class Batch:
    """A batch's transaction as its operations run.

    Bets and wins (the hot path) are set-based: each runs its rules on the wallet's draft
    in memory and gathers its rows in `writes`, which one statement writes before the
    commit. The other operations write at once; before one runs, the gathered rows
    are written (it may read them). Invariant: a wallet with rows still gathered has its
    draft in `drafts`, as the batch's last operation on it left it; a wallet without one
    is read from Postgres, which then holds everything the batch did to it.

    A `solo` batch is a call run alone (group commit off, or taken out of a shared batch):
    it reads nothing up front, lets the journal draw its id and writes at once, with the
    per-player statements only (router queries on Citus: docs/SCALING.md), so a call alone
    costs no more statements than it needs.
    """

    drafts: dict[tuple[str, str], Draft]
    tombstones: set[tuple[str, str, str]] | None  # None when each bet must ask Postgres
    stakes: dict[tuple[int, str, str], tuple[int, int]]  # rounds as the batch left them
    journal_ids: list[int]
    at: datetime
    writes: BatchWrites = field(default_factory=BatchWrites)
    index: int = 0  # the running operation's position in the batch
    set_based: bool = False  # whether the running operation's rows are gathered
    handed: dict[tuple[str, str], Draft] = field(default_factory=dict)
    solo: bool = False

    @classmethod
    def alone(cls, at: datetime) -> Batch:
        return cls(drafts={}, tombstones=None, stakes={}, journal_ids=[], at=at, solo=True)

    def next_journal_id(self) -> int | None:
        """The id drawn for the running operation (journal order = applied order); None in
        a solo batch, whose one row takes the journal's next id."""
        if self.solo:
            return None
        assert self.journal_ids, "one journal id is drawn per operation of the batch"
        return self.journal_ids.pop()

    def settle_drafts(self, *, ok: bool) -> None:
        """After an operation: its drafts become the wallets' state, unless it was rejected
        (its rule may have moved money before it refused)."""
        for key, draft in self.handed.items():
            if not ok:
                continue  # the draft before it stays (none: read from Postgres when needed)
            after = draft.settled(bonuses_from=self.drafts.get(key))
            if after.bonuses_loaded:
                self.drafts[key] = after
            else:  # written at once, bonuses never loaded: read again when needed
                self.drafts.pop(key, None)
        self.handed.clear()
