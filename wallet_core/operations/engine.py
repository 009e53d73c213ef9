"""The batch engine: runs calls in shared Postgres transactions, each keeping its own answer.

`run_batch` puts a group-commit batch (or a non-atomic ExecuteBatch) in one transaction: every
wallet locked in id order and read in one statement, the handlers run in arrival order, bets
and wins gathered into one set-based write before the commit. An operation that cannot share
the transaction is taken out and runs `alone`, which is the same engine with a batch of one.
`run_atomic` commits all of an atomic ExecuteBatch or none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg

from wallet_core.db import DB_DOWN
from wallet_core.domain import commands as cmd
from wallet_core.domain import errors
from wallet_core.domain.errors import WalletError
from wallet_core.domain.outcome import Outcome
from wallet_core.operations.batch import BY_ID, SET_BASED, Batch
from wallet_core.operations.calls import (
    Call,
    conflicting_repeat,
    dedupe,
    duplicate_psp_reference,
    first_of,
    pair,
    refusal,
    replay,
    replay_or_error,
    rolled_back,
    wallets_of,
    with_duplicates,
)
from wallet_core.operations.handlers import Handlers
from wallet_core.storage import repo
from wallet_core.storage.batch_writes import KeysTaken

# A shared transaction that fails is run again without the failing operation at most this many
# times (each re-run repeats the work before it); past that, the rest run alone.
BATCH_RERUNS_MAX = 3


def _may_skip_lookup(call: Call, likely_new: bool) -> bool:
    """Whether a call's journal lookup may wait for a conflict (see run_batch)."""
    return likely_new and type(call.command) in SET_BASED


class _RollBack(Exception):
    """Raised inside an atomic batch's transaction to undo it."""


class BatchEngine:
    def __init__(self, *, pool: asyncpg.Pool, handlers: Handlers, pool_acquire_timeout_ms: int,
                 conflict_retries_max: int) -> None:
        self._pool = pool
        self._handlers = handlers
        self._acquire_timeout_s = pool_acquire_timeout_ms / 1000
        self._retries_max = conflict_retries_max

    async def run_batch(self, calls: list[Call], *, likely_new: bool = False,
                        one_alone: bool = True) -> list[Outcome | Exception]:
        """Runs calls in one transaction, each keeping its own outcome. An operation that
        can't share it (a domain error, a key another connection just committed, a deadlock,
        a bug) is taken out and the rest run again without it, a bounded number of times;
        what is taken out runs alone afterwards, so its error reaches only its own caller.

        `likely_new`: Redis answered that it knows none of these keys. The journal is then
        not asked up front for bets and wins (one round trip less per batch of them): a key
        it does know after all (an expired or lost cache entry, a retry racing its first
        call) still cannot run twice, because every row they write goes with their journal
        row, which conflicts, and the call runs alone, which asks the journal first and
        replays. For the same reason a domain error such a call meets is not answered from
        the shared transaction but by the call alone: the key may be a reused one, and the
        journal decides that first. The other commands are always looked up first: a
        repeated withdrawal step replays by the withdrawal's state, and a deposit has a
        second unique key (psp_reference), so neither may stand in for the journal.

        `one_alone`: a batch of one runs alone, with the per-player statements, which cost
        less for one row than the set-based ones (loadtests/statement_times.py). Group
        commit asks for it only when no other batch is running: under load a call alone
        holds its connection for more round trips, and the queue behind it grows."""
        if one_alone and len(calls) == 1:
            return [await self._alone(calls[0], likely_new=likely_new)]
        results, unique = dedupe(calls)
        if not unique:
            return []
        alone: list[int] = []
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            asked = [i for i in unique if not _may_skip_lookup(calls[i], likely_new)]
            if asked:
                found = await repo.journal_by_keys(conn, [pair(calls[i]) for i in asked])
                for i in asked:
                    if pair(calls[i]) in found:
                        results[i] = replay_or_error(calls[i], found[pair(calls[i])])
            run = [i for i in unique if results[i] is None]
            for _ in range(BATCH_RERUNS_MAX + 1):
                if not run:
                    break
                failed = await self._shared(conn, calls, run, results)
                if failed is None:
                    run = []
                    break
                indexes, error = failed
                for i in run:
                    results[i] = None
                if isinstance(error, WalletError) and indexes[0] in asked:
                    results[indexes[0]] = error  # raised before any write: its answer as is
                else:
                    alone.extend(indexes)
                run = [i for i in run if i not in indexes]
            alone.extend(run)
        for i in sorted(alone):
            results[i] = await self._alone(calls[i])
        # A repeat of a key whose first call failed unrecorded is not its replay: when it
        # carries another request, the key is still free and the repeat runs on its own.
        for i, j in enumerate(first_of(calls)):
            if (j != i and isinstance(results[j], Exception)
                    and calls[i].fingerprint != calls[j].fingerprint):
                results[i] = await self._alone(calls[i])
        return with_duplicates(calls, results)

    async def _shared(self, conn: asyncpg.Connection, calls: list[Call], run: list[int],
                      results: list[Outcome | Exception | None],
                      ) -> tuple[list[int], Exception] | None:
        """One try of a shared transaction; the failing operations' indexes and the error,
        if any."""
        batch: Batch | None = None
        try:
            async with self._transaction(conn, [calls[i] for i in run]) as batch:
                for i in run:
                    results[i] = await self._step(conn, batch, calls[i], i)
        except DB_DOWN:
            raise
        except KeysTaken as exc:  # committed meanwhile elsewhere: these replay alone
            return exc.indexes, exc
        except Exception as exc:  # the batch's edge: the operation is retried alone
            return [run[0] if batch is None else batch.index], exc
        return None

    @contextlib.asynccontextmanager
    async def _transaction(self, conn: asyncpg.Connection, calls: list[Call], *,
                           solo: bool = False) -> AsyncIterator[Batch]:
        """One transaction for a batch: every wallet locked and read up front (not for a
        solo batch: its handler locks what it needs), and its gathered rows written before
        the commit (not when the body raised: then it all rolls back)."""
        async with conn.transaction():
            batch = (Batch.alone(datetime.now(UTC)) if solo
                     else await self._lock_all(conn, calls))
            yield batch
            await batch.writes.flush(conn)

    async def _step(self, conn: asyncpg.Connection, batch: Batch, call: Call,
                    index: int) -> Outcome:
        """One operation of a batch, set-based or written at once (see Batch)."""
        batch.index = index
        batch.set_based = not batch.solo and type(call.command) in SET_BASED
        if not batch.set_based:
            await batch.writes.flush(conn)  # it may read what the batch gathered
        outcome = await self._handlers.run(conn, batch, call)
        batch.settle_drafts(ok=outcome.rejection is None)
        if not batch.set_based:
            batch.stakes.clear()  # a rollback changes its round's stake
            if isinstance(call.command, BY_ID):
                batch.drafts.clear()  # it wrote a wallet it read by id, not its draft
        return outcome

    async def _lock_all(self, conn: asyncpg.Connection, calls: list[Call]) -> Batch:
        """Every wallet the calls touch, locked in wallet id order, so batches can't deadlock
        one another. Operations named by withdrawal or bonus id are resolved to their wallet
        first (that mapping never changes). What the locks let us read once for the whole
        batch (each wallet's balances and active bonuses, the bets' tombstones, the wins'
        round stakes) and a journal id per operation come back with them."""
        ids: list[int] = []
        for call in calls:
            c = call.command
            if isinstance(c, cmd.CommitWithdrawal | cmd.CancelWithdrawal
                          | cmd.ReverseWithdrawal):
                found = await repo.withdrawal_wallet(conn, c.withdrawal_id)
            elif isinstance(c, cmd.ForfeitBonus | cmd.ExpireBonus):
                found = await repo.bonus_wallet(conn, c.bonus_id)
            else:
                continue
            if found is not None:
                ids.append(found[0])
        # A rollback in the batch may write a tombstone a later bet must see: then each bet
        # asks for itself.
        ask_each = any(isinstance(call.command, cmd.Rollback) for call in calls)
        bets = [] if ask_each else [(call.caller, c.idempotency_key, c.player_id)
                                    for call in calls if isinstance(c := call.command, cmd.Bet)]
        wins = [(c.player_id, c.currency, c.game_id, c.round_id)
                for c in (call.command for call in calls) if isinstance(c, cmd.Win)]
        drafts, read = await repo.lock_and_read(
            conn, wallets_of(calls), ids, bets=bets, wins=wins,
            journal_ids_n=len(calls))  # one per operation, drawn in the batch's order
        # A wallet also reached by id is read fresh by that operation's handler; a draft of
        # it read now could be stale by the time a later operation took it.
        by_id = set(ids)
        drafts = {k: d for k, d in drafts.items() if d.wallet_id not in by_id}
        return Batch(drafts=drafts, tombstones=None if ask_each else read.tombstones,
                     stakes=read.stakes, journal_ids=read.journal_ids[::-1], at=read.at)

    async def _alone(self, call: Call, *, likely_new: bool = False) -> Outcome | Exception:
        try:
            return await self.alone(call, likely_new=likely_new)
        except DB_DOWN:
            raise
        except Exception as exc:  # kept as this call's own answer, not its neighbours'
            return exc

    async def run_atomic(self, calls: list[Call]) -> list[Outcome | Exception]:
        """All calls commit together or none does; bounded retries on conflicts. The journal
        is always asked first: a refused call refuses the whole batch, so every answer must
        be known before anything runs."""
        for attempt in range(self._retries_max + 1):
            try:
                async with repo.write_errors():
                    return await self._try_atomic(calls)
            except (repo.Taken, KeysTaken, repo.WriteConflict):
                await asyncio.sleep(0.002 * (attempt + 1))
        return [errors.Aborted("the batch kept conflicting with concurrent operations; retry "
                               "it with the same idempotency keys") for _ in calls]

    async def _try_atomic(self, calls: list[Call]) -> list[Outcome | Exception]:
        results, unique = dedupe(calls)
        if not unique:
            return []
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            found = await repo.journal_by_keys(conn, [pair(calls[i]) for i in unique])
            for i in unique:
                if pair(calls[i]) in found:
                    results[i] = replay_or_error(calls[i], found[pair(calls[i])])
            # The lowest index that refuses the batch: a refused answer, or a bad repeat.
            # A repeat of a key shares its first call's answer (a replay that did happen).
            answered = [results[j] for j in first_of(calls)]
            refusals = [r for r in (refusal(answered), conflicting_repeat(calls)) if r]
            if refusals:
                return list(rolled_back(answered, min(refusals, key=lambda r: r[0])))
            run = [i for i in unique if results[i] is None]
            failed: tuple[int, WalletError] | None = None
            try:
                async with self._transaction(conn, [calls[i] for i in run]) as batch:
                    for i in run:
                        failed = await self._atomic_step(conn, batch, calls[i], i, results)
                        if failed is not None:
                            raise _RollBack()
            except _RollBack:
                assert failed is not None
                for i in run:
                    results[i] = None
                return list(rolled_back(results, failed))
        return with_duplicates(calls, results)

    async def _atomic_step(self, conn: asyncpg.Connection, batch: Batch, call: Call, i: int,
                           results: list[Outcome | Exception | None],
                           ) -> tuple[int, WalletError] | None:
        try:
            async with repo.write_errors():
                outcome = await self._step(conn, batch, call, i)
        except WalletError as exc:
            return i, exc
        except repo.PspReferenceTaken:
            # Any other constraint (a key committed meanwhile) goes up: the retry replays it.
            return i, duplicate_psp_reference()
        if outcome.rejection is not None:
            # Rolled back with the batch, so nothing is recorded: the same key may run again.
            outcome.rejection.metadata.pop("transaction_id", None)
            outcome.rejection.metadata["recorded"] = "false"
            return i, outcome.rejection
        results[i] = outcome
        return None

    async def alone(self, call: Call, *, likely_new: bool = False) -> Outcome:
        """One call as a batch of one, in its own transaction (Batch.alone: the per-player
        statements, written at once). A key another connection committed meanwhile is
        replayed and a deadlock retried, a bounded number of times. `likely_new` (see
        run_batch): a bet or win asks the journal only if it conflicts on its key. Any
        call that meets a domain error asks it before answering: a reused key must not
        hide behind the error."""
        c = call.command
        # The lookup names the player, so on Citus it stays on the player's shard.
        player = c.player_id if isinstance(c, cmd.WalletCommand) else None
        ask_first = not _may_skip_lookup(call, likely_new)
        for attempt in range(self._retries_max + 1):
            try:
                async with (repo.write_errors(),
                            self._pool.acquire(timeout=self._acquire_timeout_s) as conn):
                    if ask_first and (found := await repo.journal_by_key(
                            conn, call.caller, c.idempotency_key, player)) is not None:
                        return replay(call, *found)
                    try:
                        async with self._transaction(conn, [call], solo=True) as batch:
                            return await self._step(conn, batch, call, 0)
                    except WalletError:
                        # Whatever the player (the lookup before may have named this one): a
                        # key reused for another player's request is IDEMPOTENCY_KEY_REUSED,
                        # not this request's domain error. Only on this error path.
                        if (found := await repo.journal_by_key(
                                conn, call.caller, c.idempotency_key, None)) is None:
                            raise
                        return replay(call, *found)
            except repo.PspReferenceTaken as exc:
                raise duplicate_psp_reference() from exc
            except (repo.KeyTaken, KeysTaken):
                # Another request with this key committed first: the next pass replays it,
                # looking for the key whatever its player (on one Postgres a key is unique
                # per caller; the request may name another player than the one that won).
                player = None
                ask_first = True
            except repo.WriteConflict:
                await asyncio.sleep(0.002 * (attempt + 1))
        raise errors.Aborted("the operation kept conflicting with concurrent ones; retry "
                             "with the same idempotency key")
