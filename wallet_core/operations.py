"""Use cases: run each command in one Postgres transaction, exactly once per key.

The flow of every money-moving call:
1. Redis fast path: a cached outcome for (caller, key) is replayed without Postgres.
2. Postgres: the journal row for (caller, key), if any, is replayed (or refused as
   IDEMPOTENCY_KEY_REUSED when the request differs).
3. Otherwise, in one transaction: lock the one wallet concerned, apply the domain rules to a
   Draft, write journal + postings + balances (+ the op's own rows). A business rejection is
   recorded the same way, without postings, so its retry replays the same rejection.
4. A concurrent request with the same key loses on the journal's unique constraint after the
   winner commits; it retries, finds the winner's row and replays it.
Transient failures (database down, deadline) record nothing, so a retry executes afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from wallet_core import metrics
from wallet_core.db import DB_DOWN, database_unavailable
from wallet_core.domain import bonus as bonus_policy
from wallet_core.domain import commands as cmd
from wallet_core.domain import errors, rules
from wallet_core.domain.errors import InvalidField, NotFound, Rejected, WalletError
from wallet_core.domain.ledger import BonusState, Draft
from wallet_core.domain.money import Currency
from wallet_core.domain.outcome import Outcome
from wallet_core.group_commit import GroupCommit
from wallet_core.idempotency_cache import IdempotencyCache
from wallet_core.storage import repo
from wallet_core.storage.batch_writes import BatchWrites, KeysTaken

log = logging.getLogger(__name__)

SYSTEM_CALLER = "system"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Call:
    caller: str
    command: cmd.Command
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class GroupCommitSettings:
    batch_max: int
    batches_max: int


@dataclass(slots=True)
class _Batch:
    """A batch's transaction as its operations run.

    Bets and wins (the hot path) are set-based: each runs its rules on the wallet's draft
    in memory and gathers its rows in `writes`, which one statement writes before the
    commit. The other operations write at once, as alone; before one runs, the gathered rows
    are written (it may read them). Invariant: a wallet with rows still gathered has its
    draft in `drafts`, as the batch's last operation on it left it; a wallet without one
    is read from Postgres, which then holds everything the batch did to it.
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

    def next_journal_id(self) -> int:
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


# Set only while a batch's transaction runs, in the batch's own task.
_BATCH: ContextVar[_Batch | None] = ContextVar("wallet_batch", default=None)
_SET_BASED = frozenset({cmd.Bet, cmd.Win})
# Operations that find their wallet by withdrawal or bonus id and read it from Postgres.
_BY_ID = (cmd.CommitWithdrawal, cmd.CancelWithdrawal, cmd.ReverseWithdrawal,
          cmd.ForfeitBonus, cmd.ExpireBonus)


class _RollBack(Exception):
    """Raised inside an atomic batch's transaction to undo it."""


# A shared transaction that fails is run again without the failing operation at most this many
# times (each re-run repeats the work before it); past that, the rest run alone.
BATCH_RERUNS_MAX = 3


class Ledger:
    def __init__(self, *, pool: asyncpg.Pool, cache: IdempotencyCache,
                 currencies: dict[str, Currency], pool_acquire_timeout_ms: int,
                 conflict_retries_max: int, clock: Callable[[], datetime] = utc_now,
                 group_commit: GroupCommitSettings | None = None) -> None:
        self._group: GroupCommit[_Call, Outcome, Exception] | None = None
        if group_commit is not None:
            self._group = GroupCommit(self._run_group, batch_max=group_commit.batch_max,
                                      batches_max=group_commit.batches_max)
        self._pool = pool
        self._cache = cache
        self.currencies = currencies
        self._acquire_timeout_s = pool_acquire_timeout_ms / 1000
        self._retries_max = conflict_retries_max
        self._clock = clock
        self._handlers: dict[type[cmd.Command], Callable[[asyncpg.Connection, _Call],
                                                          Awaitable[Outcome]]] = {
            cmd.OpenWallet: self._open, cmd.Deposit: self._psp_transfer,
            cmd.ReserveWithdrawal: self._reserve, cmd.CommitWithdrawal: self._finish_withdrawal,
            cmd.CancelWithdrawal: self._finish_withdrawal,
            cmd.ReverseWithdrawal: self._reverse_withdrawal, cmd.Bet: self._bet,
            cmd.Win: self._win, cmd.Rollback: self._rollback, cmd.GrantBonus: self._grant,
            cmd.ForfeitBonus: self._end_bonus, cmd.ExpireBonus: self._end_bonus,
            cmd.Chargeback: self._psp_transfer, cmd.Adjust: self._adjust,
        }

    # -- the idempotent execution every command goes through -------------------------------

    async def execute(self, caller: str, command: cmd.Command) -> Outcome:
        call = _Call(caller, command, command.fingerprint())
        if (recent := self._cache.recent(caller, command.idempotency_key)) is not None:
            return _replay(call, *recent)  # answered here, no round trip at all
        if self._group is not None:
            try:  # the batch asks Redis for all its calls at once, and caches their outcomes
                return await self._group.submit(call)
            except DB_DOWN as exc:
                raise database_unavailable() from exc
        cached = await self._cache.get(*_cache_key(call))
        if cached is not None:
            return _replay(call, *cached)
        try:
            outcome = await self._execute_in_db(call)
        except DB_DOWN as exc:
            raise database_unavailable() from exc
        await self._cache.put(*_cache_key(call), call.fingerprint, outcome)
        return outcome

    async def _run_group(self, calls: list[_Call]) -> list[Outcome | Exception]:
        """A group-commit batch: replays from one Redis MGET, the rest in one transaction,
        their outcomes cached in one Redis pipeline (two round trips per batch, not two per
        call)."""
        metrics.GROUP_COMMIT_BATCH_SIZE.observe(len(calls))
        results = await self._through_cache(calls, self._run_batch)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    async def _through_cache(self, calls: list[_Call],
                             run: Callable[[list[_Call]], Awaitable[list[Outcome | Exception]]],
                             *, atomic: bool = False) -> list[Outcome | Exception | None]:
        """Answers what Redis knows, runs the rest, caches what ran; an atomic batch runs
        only when nothing in it is refused already."""
        cached = await self._cache.get_many([_cache_key(call) for call in calls])
        results: list[Outcome | Exception | None] = [
            None if hit is None else _replay_or_error(call, hit)
            for call, hit in zip(calls, cached, strict=True)]
        if atomic and (refused := _refusal(results)) is not None:
            return list(_rolled_back(results, refused))
        todo = [i for i, r in enumerate(results) if r is None]
        for i, result in zip(todo, await run([calls[i] for i in todo]), strict=True):
            results[i] = result
        await self._cache.put_many([(*_cache_key(calls[i]), calls[i].fingerprint, r)
                                    for i in todo if isinstance(r := results[i], Outcome)])
        return results

    @property
    def group_commit(self) -> GroupCommit[_Call, Outcome, Exception] | None:
        return self._group

    async def close(self) -> None:
        if self._group is not None:
            await self._group.close()

    async def execute_many(self, caller: str, commands: list[cmd.Command], *,
                           atomic: bool) -> list[Outcome | WalletError]:
        """ExecuteBatch: every command with its own key and result, in one transaction when
        they allow it; `atomic` commits all of them or none."""
        calls = [_Call(caller, c, c.fingerprint()) for c in commands]
        try:
            results = await self._through_cache(
                calls, self._run_atomic if atomic else self._run_batch, atomic=atomic)
        except DB_DOWN as exc:
            raise database_unavailable() from exc
        done: list[Outcome | WalletError] = []
        for r in results:
            if isinstance(r, Exception) and not isinstance(r, WalletError):
                raise r  # a bug met by one operation of an ExecuteBatch: INTERNAL for the call
            assert r is not None, "every operation of a batch has an answer"
            done.append(r)
        return done

    async def _run_batch(self, calls: list[_Call]) -> list[Outcome | Exception]:
        """Runs calls in one transaction, each keeping its own outcome. An operation that
        can't share it (a domain error, a key another connection just committed, a deadlock,
        a bug) is taken out and the rest run again without it, a bounded number of times;
        what is taken out runs alone afterwards, so its error reaches only its own caller."""
        results, unique = _dedupe(calls)
        if not unique:
            return []
        alone: list[int] = []
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            found = await repo.journal_by_keys(conn, [_pair(calls[i]) for i in unique])
            for i in unique:
                if _pair(calls[i]) in found:
                    results[i] = _replay_or_error(calls[i], found[_pair(calls[i])])
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
                if isinstance(error, WalletError):
                    results[indexes[0]] = error  # raised before any write: its answer as is
                else:
                    alone.extend(indexes)
                run = [i for i in run if i not in indexes]
            alone.extend(run)
        for i in sorted(alone):
            results[i] = await self._alone(calls[i])
        # A repeat of a key whose first call failed unrecorded is not its replay: when it
        # carries another request, the key is still free and the repeat runs on its own.
        for i, j in enumerate(_first_of(calls)):
            if (j != i and isinstance(results[j], Exception)
                    and calls[i].fingerprint != calls[j].fingerprint):
                results[i] = await self._alone(calls[i])
        return _with_duplicates(calls, results)

    async def _shared(self, conn: asyncpg.Connection, calls: list[_Call], run: list[int],
                      results: list[Outcome | Exception | None],
                      ) -> tuple[list[int], Exception] | None:
        """One try of a shared transaction; the failing operations' indexes and the error,
        if any."""
        batch: _Batch | None = None
        try:
            async with self._batch_transaction(conn, [calls[i] for i in run]) as batch:
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
    async def _batch_transaction(self, conn: asyncpg.Connection,
                                 calls: list[_Call]) -> AsyncIterator[_Batch]:
        """One transaction for a batch: every wallet locked and read up front, the batch
        visible to the handlers while it runs, and its gathered rows written before the
        commit (not when the body raised: then it all rolls back)."""
        async with conn.transaction():
            batch = await self._lock_all(conn, calls)
            token = _BATCH.set(batch)
            try:
                yield batch
                await batch.writes.flush(conn)
            finally:
                _BATCH.reset(token)

    async def _step(self, conn: asyncpg.Connection, batch: _Batch, call: _Call,
                    index: int) -> Outcome:
        """One operation of a batch, set-based or written at once (see _Batch)."""
        batch.index = index
        batch.set_based = type(call.command) in _SET_BASED
        if not batch.set_based:
            await batch.writes.flush(conn)  # it may read what the batch gathered
        outcome = await self._handlers[type(call.command)](conn, call)
        batch.settle_drafts(ok=outcome.rejection is None)
        if not batch.set_based:
            batch.stakes.clear()  # a rollback changes its round's stake
            if isinstance(call.command, _BY_ID):
                batch.drafts.clear()  # it wrote a wallet it read by id, not its draft
        return outcome

    async def _lock_all(self, conn: asyncpg.Connection, calls: list[_Call]) -> _Batch:
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
            conn, _wallets(calls), ids, bets=bets, wins=wins,
            journal_ids_n=len(calls))  # one per operation, drawn in the batch's order
        # A wallet also reached by id is read fresh by that operation's handler; a draft of
        # it read now could be stale by the time a later operation took it.
        by_id = set(ids)
        drafts = {k: d for k, d in drafts.items() if d.wallet_id not in by_id}
        return _Batch(drafts=drafts, tombstones=None if ask_each else read.tombstones,
                      stakes=read.stakes, journal_ids=read.journal_ids[::-1], at=read.at)

    async def _alone(self, call: _Call) -> Outcome | Exception:
        try:
            return await self._execute_in_db(call)
        except DB_DOWN:
            raise
        except Exception as exc:  # kept as this call's own answer, not its neighbours'
            return exc

    async def _run_atomic(self, calls: list[_Call]) -> list[Outcome | Exception]:
        """All calls commit together or none does; bounded retries on conflicts."""
        for attempt in range(self._retries_max + 1):
            try:
                async with repo.write_errors():
                    return await self._try_atomic(calls)
            except (repo.Taken, KeysTaken, repo.WriteConflict):
                await asyncio.sleep(0.002 * (attempt + 1))
        return [errors.Aborted("the batch kept conflicting with concurrent operations; retry "
                               "it with the same idempotency keys") for _ in calls]

    async def _try_atomic(self, calls: list[_Call]) -> list[Outcome | Exception]:
        results, unique = _dedupe(calls)
        if not unique:
            return []
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            found = await repo.journal_by_keys(conn, [_pair(calls[i]) for i in unique])
            for i in unique:
                if _pair(calls[i]) in found:
                    results[i] = _replay_or_error(calls[i], found[_pair(calls[i])])
            # The lowest index that refuses the batch: a refused answer, or a bad repeat.
            # A repeat of a key shares its first call's answer (a replay that did happen).
            answered = [results[j] for j in _first_of(calls)]
            refusals = [r for r in (_refusal(answered), _conflicting_repeat(calls)) if r]
            if refusals:
                return list(_rolled_back(answered, min(refusals, key=lambda r: r[0])))
            run = [i for i in unique if results[i] is None]
            failed: tuple[int, WalletError] | None = None
            try:
                async with self._batch_transaction(conn, [calls[i] for i in run]) as batch:
                    for i in run:
                        failed = await self._atomic_step(conn, batch, calls[i], i, results)
                        if failed is not None:
                            raise _RollBack()
            except _RollBack:
                assert failed is not None
                for i in run:
                    results[i] = None
                return list(_rolled_back(results, failed))
        return _with_duplicates(calls, results)

    async def _atomic_step(self, conn: asyncpg.Connection, batch: _Batch, call: _Call, i: int,
                           results: list[Outcome | Exception | None],
                           ) -> tuple[int, WalletError] | None:
        try:
            async with repo.write_errors():
                outcome = await self._step(conn, batch, call, i)
        except WalletError as exc:
            return i, exc
        except repo.PspReferenceTaken:
            # Any other constraint (a key committed meanwhile) goes up: the retry replays it.
            return i, errors.Conflict(
                "this psp_reference was already credited under another idempotency key",
                reason=errors.DUPLICATE_PSP_REFERENCE)
        if outcome.rejection is not None:
            # Rolled back with the batch, so nothing is recorded: the same key may run again.
            outcome.rejection.metadata.pop("transaction_id", None)
            outcome.rejection.metadata["recorded"] = "false"
            return i, outcome.rejection
        results[i] = outcome
        return None

    async def _execute_in_db(self, call: _Call) -> Outcome:
        c = call.command
        # The lookup names the player, so on Citus it stays on the player's shard.
        player = c.player_id if isinstance(c, cmd.WalletCommand) else None
        for attempt in range(self._retries_max + 1):
            try:
                async with (repo.write_errors(),
                            self._pool.acquire(timeout=self._acquire_timeout_s) as conn):
                    found = await repo.journal_by_key(conn, call.caller, c.idempotency_key,
                                                      player)
                    if found is not None:
                        return _replay(call, *found)
                    async with conn.transaction():
                        return await self._handlers[type(call.command)](conn, call)
            except repo.PspReferenceTaken as exc:
                raise errors.Conflict(
                    "this psp_reference was already credited under another idempotency key",
                    reason=errors.DUPLICATE_PSP_REFERENCE) from exc
            except repo.KeyTaken:
                # Another request with this key committed first: the next pass replays it,
                # looking for the key whatever its player (on one Postgres a key is unique
                # per caller; the request may name another player than the one that won).
                player = None
            except repo.WriteConflict:
                await asyncio.sleep(0.002 * (attempt + 1))
        raise errors.Aborted("the operation kept conflicting with concurrent ones; retry "
                             "with the same idempotency key")

    # -- shared steps ------------------------------------------------------------------------

    async def _lock(self, conn: asyncpg.Connection, c: cmd.WalletCommand, *,
                    with_bonuses: bool) -> Draft:
        batch = _BATCH.get()
        key = (c.player_id, c.currency)
        if batch is not None and (found := batch.drafts.get(key)) is not None:
            # Locked and read when the batch began, or as its last operation left it.
            draft: Draft | None = found.fork() if with_bonuses else found.without_bonuses()
        else:
            draft = await repo.lock_wallet(conn, c.player_id, c.currency,
                                           with_bonuses=with_bonuses or batch is not None)
        if draft is None:
            raise NotFound(f"player_id has no {c.currency} wallet; open it first",
                           reason=errors.WALLET_NOT_FOUND)
        if batch is not None:
            batch.handed[key] = draft
        return draft

    async def _settle(self, conn: asyncpg.Connection, call: _Call, draft: Draft,
                      currency: str, rule: Callable[[], dict[str, Any]],
                      details: dict[str, str],
                      after: Callable[[int], Awaitable[None]] | None = None,
                      new_bonus_id: int | None = None) -> Outcome:
        """Apply a rule to the draft and record the result, or record its rejection."""
        c = call.command
        batch = _BATCH.get()
        if batch is not None and batch.set_based:
            return await self._gather(batch, call, draft, currency, rule, details, after)
        # In a batch, the id drawn for this operation keeps journal order = applied order.
        journal_id = batch.next_journal_id() if batch is not None else None
        try:
            fields = rule()
        except Rejected as rejection:
            tid, at = await repo.record(
                conn, caller=call.caller, key=c.idempotency_key, fingerprint=call.fingerprint,
                kind=c.kind, draft=draft, currency=currency, outcome_fields={},
                details=details, rejection_reason=rejection.reason,
                rejection_message=rejection.message, journal_id=journal_id)
            rejection.metadata["transaction_id"] = str(tid)
            return Outcome(tid, at, c.kind, currency, None, {}, rejection)
        draft.check_invariants()
        tid, at = await repo.record(
            conn, caller=call.caller, key=c.idempotency_key, fingerprint=call.fingerprint,
            kind=c.kind, draft=draft, currency=currency, outcome_fields=fields, details=details,
            journal_id=journal_id)
        # A bonus granted now is inserted by `after` with its final state, not updated.
        await repo.write_bonuses(conn, draft, skip=new_bonus_id)
        if after is not None:
            await after(tid)
        return Outcome(tid, at, c.kind, currency, draft.balances(), fields)

    async def _gather(self, batch: _Batch, call: _Call, draft: Draft, currency: str,
                      rule: Callable[[], dict[str, Any]], details: dict[str, str],
                      after: Callable[[int], Awaitable[None]] | None) -> Outcome:
        """_settle for a set-based operation: the same rows, gathered for the batch's write."""
        c = call.command
        tid = batch.next_journal_id()

        def gather(fields: dict[str, Any], rejection: Rejected | None = None) -> None:
            batch.writes.record(
                index=batch.index, journal_id=tid, caller=call.caller, key=c.idempotency_key,
                fingerprint=call.fingerprint, kind=c.kind, draft=draft, currency=currency,
                outcome_fields=fields, details=details,
                rejection_reason=rejection.reason if rejection else None,
                rejection_message=rejection.message if rejection else None)

        try:
            fields = rule()
        except Rejected as rejection:
            gather({}, rejection)
            rejection.metadata["transaction_id"] = str(tid)
            return Outcome(tid, batch.at, c.kind, currency, None, {}, rejection)
        draft.check_invariants()
        gather(fields)
        if after is not None:
            await after(tid)
        return Outcome(tid, batch.at, c.kind, currency, draft.balances(), fields)

    # -- handlers, one per command -----------------------------------------------------------

    async def _open(self, conn: asyncpg.Connection, call: _Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.OpenWallet)
        created = await repo.create_wallet(conn, c.player_id, c.currency)
        draft = await self._lock(conn, c, with_bonuses=False)
        return await self._settle(conn, call, draft, c.currency,
                                  lambda: {"created": created}, {"player_id": c.player_id})

    async def _psp_transfer(self, conn: asyncpg.Connection, call: _Call) -> Outcome:
        """Deposit and Chargeback: cash against a PSP account, keyed by psp_reference."""
        c = call.command
        assert isinstance(c, cmd.Deposit | cmd.Chargeback)
        draft = await self._lock(conn, c, with_bonuses=False)

        def rule() -> dict[str, Any]:
            if isinstance(c, cmd.Deposit):
                return rules.deposit(draft, c)
            return rules.chargeback(draft, c)

        details = {"psp": c.psp, "psp_reference": c.psp_reference}
        if isinstance(c, cmd.Deposit) and c.conversion is not None:
            details.update(conversion_details(c.conversion))
        return await self._settle(conn, call, draft, c.currency, rule, details)

    async def _reserve(self, conn: asyncpg.Connection, call: _Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.ReserveWithdrawal)
        draft = await self._lock(conn, c, with_bonuses=False)
        withdrawal_id = await repo.next_withdrawal_id(conn)

        def rule() -> dict[str, Any]:
            rules.reserve_withdrawal(draft, c)
            return {"withdrawal_id": str(withdrawal_id)}

        async def after(tid: int) -> None:
            await repo.insert_withdrawal(conn, withdrawal_id, draft, c.amount_minor, c.psp, tid)

        return await self._settle(conn, call, draft, c.currency, rule, {"psp": c.psp}, after)

    async def _lock_withdrawal(self, conn: asyncpg.Connection,
                               withdrawal_id: int) -> tuple[str, Draft, repo.Withdrawal]:
        """Lock the withdrawal's wallet, then read the withdrawal (stable under that lock)."""
        wallet = await repo.withdrawal_wallet(conn, withdrawal_id)
        if wallet is None:
            raise NotFound("withdrawal_id: no such withdrawal", reason=errors.WITHDRAWAL_NOT_FOUND)
        currency, draft = await repo.lock_wallet_by_id(conn, wallet, with_bonuses=False)
        return currency, draft, await repo.withdrawal(conn, withdrawal_id, draft.player_id)

    async def _finish_withdrawal(self, conn: asyncpg.Connection, call: _Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.CommitWithdrawal | cmd.CancelWithdrawal)
        currency, draft, w = await self._lock_withdrawal(conn, c.withdrawal_id)
        target = "committed" if isinstance(c, cmd.CommitWithdrawal) else "cancelled"
        if w.state == target:
            # Repeating the same final step is a replay of the first one, whatever its key.
            assert w.final_journal_id is not None, "a final withdrawal names its journal row"
            return (await repo.journal_by_id(conn, w.final_journal_id)).as_replay()
        reason = c.reason if isinstance(c, cmd.CancelWithdrawal) else None

        def rule() -> dict[str, Any]:
            if w.state != "reserved":
                raise errors.rejected(errors.WITHDRAWAL_ALREADY_FINAL,
                                      f"the withdrawal is already {w.state}")
            if target == "committed":
                return rules.commit_withdrawal(draft, w.amount_minor, w.psp)
            return rules.cancel_withdrawal(draft, w.amount_minor)

        async def after(tid: int) -> None:
            await repo.finish_withdrawal(conn, c.withdrawal_id, target, tid, reason,
                                         draft.player_id)

        details = {"withdrawal_id": str(c.withdrawal_id), "psp": w.psp}
        if reason:
            details["reason"] = reason
        return await self._settle(conn, call, draft, currency, rule, details, after)

    async def _reverse_withdrawal(self, conn: asyncpg.Connection, call: _Call) -> Outcome:
        """The PSP returned a committed payout (paid, then failed): credit it back to cash."""
        c = call.command
        assert isinstance(c, cmd.ReverseWithdrawal)
        currency, draft, w = await self._lock_withdrawal(conn, c.withdrawal_id)
        if w.state == "reversed":
            # Like a repeated commit or cancel: the first reversal's answer, whatever the key.
            assert w.reversal_journal_id is not None, "a reversal names its journal row"
            return (await repo.journal_by_id(conn, w.reversal_journal_id)).as_replay()

        def rule() -> dict[str, Any]:
            if w.state != "committed":
                raise errors.rejected(errors.WITHDRAWAL_NOT_COMMITTED,
                                      f"only a committed withdrawal can be reversed; this one "
                                      f"is {w.state}")
            return rules.reverse_withdrawal(draft, w.amount_minor, w.psp)

        async def after(tid: int) -> None:
            await repo.reverse_withdrawal(conn, c.withdrawal_id, tid, c.reason, draft.player_id)

        details = {"withdrawal_id": str(c.withdrawal_id), "psp": w.psp, "reason": c.reason}
        return await self._settle(conn, call, draft, currency, rule, details, after)

    async def _bet(self, conn: asyncpg.Connection, call: _Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.Bet)
        draft = await self._lock(conn, c, with_bonuses=True)
        batch = _BATCH.get()
        if batch is not None and batch.tombstones is not None:
            tombstoned = (call.caller, c.idempotency_key, c.player_id) in batch.tombstones
        else:
            tombstoned = await repo.tombstone_exists(conn, call.caller, c.idempotency_key,
                                                     c.player_id)
        now = self._clock()
        record: list[rules.BetRecord] = []

        def rule() -> dict[str, Any]:
            if tombstoned:
                raise errors.rejected(errors.ALREADY_ROLLED_BACK,
                                      "this bet was rolled back before it arrived")
            record.append(rules.bet(draft, c, now))
            return {"cash_minor": record[0].cash_minor, "bonus_minor": record[0].bonus_minor}

        async def after(tid: int) -> None:
            r = record[0]
            bet = repo.BetRow(journal_id=tid, wallet_id=draft.wallet_id,
                              player_id=draft.player_id, caller=call.caller,
                              key=c.idempotency_key, game_id=c.game_id, round_id=c.round_id,
                              cash_minor=r.cash_minor, bonus_minor=r.bonus_minor,
                              bonus_debits=r.bonus_debits, wagered=r.wagered)
            if batch is None:
                await repo.insert_bet(conn, bet)
                return
            batch.writes.bet(bet)
            round_key = (draft.wallet_id, c.game_id, c.round_id)
            if (staked := batch.stakes.get(round_key)) is not None:  # a win in the batch reads it
                batch.stakes[round_key] = (staked[0] + r.cash_minor, staked[1] + r.bonus_minor)

        return await self._settle(conn, call, draft, c.currency, rule,
                                  {"game_id": c.game_id, "round_id": c.round_id}, after)

    async def _win(self, conn: asyncpg.Connection, call: _Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.Win)
        draft = await self._lock(conn, c, with_bonuses=True)
        staked = await self._round_stake(conn, draft, c.game_id, c.round_id)
        stake = rules.RoundStake(*staked) if staked is not None else None
        now = self._clock()
        return await self._settle(conn, call, draft, c.currency,
                                  lambda: rules.win(draft, c, stake, now),
                                  {"game_id": c.game_id, "round_id": c.round_id})

    async def _round_stake(self, conn: asyncpg.Connection, draft: Draft, game_id: str,
                           round_id: str) -> tuple[int, int] | None:
        batch = _BATCH.get()
        if batch is None:
            return await repo.round_stake(conn, draft, game_id, round_id)
        key = (draft.wallet_id, game_id, round_id)
        if key not in batch.stakes:  # not read with the locks, or reset by a rollback
            await batch.writes.flush(conn)
            batch.stakes[key] = await repo.round_stake(conn, draft, game_id,
                                                       round_id) or (0, 0)
        return batch.stakes[key]

    async def _rollback(self, conn: asyncpg.Connection, call: _Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.Rollback)
        draft = await self._lock(conn, c, with_bonuses=True)
        bet = await repo.bet_by_key(conn, call.caller, c.bet_idempotency_key, c.player_id)
        details = {"game_id": c.game_id, "bet_idempotency_key": c.bet_idempotency_key}
        if bet is None:
            # Not this player's: a bet of another player under this key is a caller's
            # mistake, not a bet never seen (the only lookup here that fans out on Citus,
            # and only for rollbacks of unknown bets).
            if await repo.bet_key_taken(conn, call.caller, c.bet_idempotency_key):
                raise InvalidField("bet_idempotency_key", "names a bet of another player")
            return await self._tombstone(conn, call, draft, c, details)
        if bet["wallet_id"] != draft.wallet_id:
            raise InvalidField("bet_idempotency_key", "names a bet of another wallet")
        if bet["game_id"] != c.game_id:
            raise InvalidField("game_id", "differs from the game_id of the bet")
        details["round_id"] = bet["round_id"]
        if bet["rolled_back_by"] is not None:
            return await self._settle(conn, call, draft, c.currency,
                                      lambda: {"outcome": "already_rolled_back",
                                               "cash_minor": 0, "bonus_minor": 0}, details)
        record = rules.BetRecord(bet["cash_minor"], bet["bonus_minor"],
                                 [(d[0], d[1]) for d in bet["bonus_debits"]],
                                 [(w[0], w[1]) for w in bet["wagered"]])
        await repo.add_bonuses(conn, draft, [d[0] for d in record.bonus_debits])
        now = self._clock()

        async def after(tid: int) -> None:
            await repo.mark_bet_rolled_back(conn, bet["journal_id"], tid, draft.player_id)
            await repo.remove_round_stake(conn, draft, c.game_id, bet["round_id"],
                                          record.cash_minor, record.bonus_minor)

        return await self._settle(conn, call, draft, c.currency,
                                  lambda: rules.rollback(draft, c, record, now), details, after)

    async def _tombstone(self, conn: asyncpg.Connection, call: _Call, draft: Draft,
                         c: cmd.Rollback, details: dict[str, str]) -> Outcome:
        """Rollback of a bet never seen: succeed, move nothing, refuse the bet if it comes."""
        exists = await repo.tombstone_exists(conn, call.caller, c.bet_idempotency_key,
                                             c.player_id)

        async def after(tid: int) -> None:
            if not exists:
                await repo.insert_tombstone(conn, call.caller, c.bet_idempotency_key, draft,
                                            tid)

        return await self._settle(conn, call, draft, c.currency,
                                  lambda: {"outcome": "bet_not_found", "cash_minor": 0,
                                           "bonus_minor": 0}, details, after)

    async def _grant(self, conn: asyncpg.Connection, call: _Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.GrantBonus)
        now = self._clock()
        if c.expires_at <= now:
            raise InvalidField("expires_at", "must be in the future")
        draft = await self._lock(conn, c, with_bonuses=True)
        bonus = BonusState(bonus_id=await repo.next_bonus_id(conn), state="active",
                           granted_minor=c.amount_minor, balance_minor=0,
                           wagering_required_minor=c.wagering_required_minor, wagered_minor=0,
                           expires_at=c.expires_at, created_at=now)

        def rule() -> dict[str, Any]:
            rules.grant_bonus(draft, c, bonus, now)
            return {"bonus_id": str(bonus.bonus_id)}

        async def after(tid: int) -> None:
            await repo.insert_bonus(conn, draft, bonus, tid)

        return await self._settle(conn, call, draft, c.currency, rule,
                                  {"bonus_id": str(bonus.bonus_id)}, after,
                                  new_bonus_id=bonus.bonus_id)

    async def _end_bonus(self, conn: asyncpg.Connection, call: _Call) -> Outcome:
        """ForfeitBonus, and the sweeper's ExpireBonus (which only expires what is due)."""
        c = call.command
        assert isinstance(c, cmd.ForfeitBonus | cmd.ExpireBonus)
        wallet = await repo.bonus_wallet(conn, c.bonus_id)
        if wallet is None:
            raise NotFound("bonus_id: no such bonus", reason=errors.BONUS_NOT_FOUND)
        currency, draft = await repo.lock_wallet_by_id(conn, wallet, with_bonuses=True)
        await repo.add_bonuses(conn, draft, [c.bonus_id])
        now = self._clock()
        if isinstance(c, cmd.ForfeitBonus):
            def rule() -> dict[str, Any]:
                return rules.forfeit_bonus(draft, c.bonus_id, now)
        else:
            def rule() -> dict[str, Any]:
                return {"expired": [list(e) for e in bonus_policy.expire_due(draft, now)]}
        return await self._settle(conn, call, draft, currency, rule,
                                  {"bonus_id": str(c.bonus_id)})

    async def _adjust(self, conn: asyncpg.Connection, call: _Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.Adjust)
        draft = await self._lock(conn, c, with_bonuses=True)
        now = self._clock()
        return await self._settle(conn, call, draft, c.currency,
                                  lambda: rules.adjust(draft, c, now),
                                  {"bucket": c.bucket, "reason": c.reason})

    # -- maintenance -------------------------------------------------------------------------

    async def expire_due_bonuses(self, batch_size_max: int) -> int:
        """Expire bonuses past their expiry (bounded batch); returns how many were handled."""
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            due = await repo.due_bonus_ids(conn, batch_size_max)
        for bonus_id in due:
            await self.execute(SYSTEM_CALLER, cmd.ExpireBonus(
                bonus_id=bonus_id, idempotency_key=f"bonus-expire:{bonus_id}"))
        return len(due)





def conversion_details(c: cmd.Conversion) -> dict[str, str]:
    """A converted deposit's journal details (`wallet-core check` reads fx_paid_currency
    and fx_paid_minor; support reads them all in GetTransaction)."""
    return {"fx_paid_currency": c.paid_currency, "fx_paid_minor": str(c.paid_minor),
            "fx_rate": c.rate, "fx_spread_bps": str(c.spread_bps),
            "fx_rate_source": c.rate_source,
            "fx_rate_time": c.rate_time.isoformat().replace("+00:00", "Z")}


def _pair(call: _Call) -> tuple[str, str]:
    return call.caller, call.command.idempotency_key


def _cache_key(call: _Call) -> tuple[str, str, str]:
    """(caller, key, player): the player, when the operation names one, places the cached
    outcome with the player's other keys (a Redis Cluster hash tag)."""
    c = call.command
    return call.caller, c.idempotency_key, c.player_id if isinstance(c, cmd.WalletCommand) else ""


def _replay_or_error(call: _Call, found: tuple[bytes, Outcome]) -> Outcome | WalletError:
    try:
        return _replay(call, *found)
    except WalletError as exc:
        return exc


def _dedupe(calls: list[_Call]) -> tuple[list[Outcome | Exception | None], list[int]]:
    """Empty results, and the indexes of the first call of each (caller, key): a repeated
    key inside one batch is answered by replaying its first call (`_with_duplicates`)."""
    firsts = _first_of(calls)
    return [None] * len(calls), [i for i, j in enumerate(firsts) if i == j]


def _conflicting_repeat(calls: list[_Call]) -> tuple[int, WalletError] | None:
    """The first repeat of a key inside the batch that carries a different request."""
    for i, (call, j) in enumerate(zip(calls, _first_of(calls), strict=True)):
        if j != i and call.fingerprint != calls[j].fingerprint:
            return i, errors.Conflict(
                "idempotency_key appears twice in the batch with different requests",
                reason=errors.IDEMPOTENCY_KEY_REUSED, metadata={"field": "idempotency_key"})
    return None


def _first_of(calls: list[_Call]) -> list[int]:
    """For each call, the index of the first call in the batch with its (caller, key)."""
    first: dict[tuple[str, str], int] = {}
    return [first.setdefault(_pair(call), i) for i, call in enumerate(calls)]


def _with_duplicates(calls: list[_Call], results: list[Outcome | Exception | None],
                     ) -> list[Outcome | Exception]:
    done: list[Outcome | Exception] = []
    for i, (call, j) in enumerate(zip(calls, _first_of(calls), strict=True)):
        own = results[i]
        if j != i and own is not None:  # a repeat that ran on its own (see _run_batch)
            done.append(own)
            continue
        result = results[j]
        assert result is not None, "every first call of a key has a result"
        if j != i and isinstance(result, Outcome):
            result = _replay_or_error(call, (calls[j].fingerprint, result))
        done.append(result)
    return done


def _refusal(results: list[Outcome | Exception | None]) -> tuple[int, WalletError] | None:
    """An atomic batch runs only if nothing in it is already refused: a reused key, a
    recorded rejection being replayed, an invalid repeat inside the batch."""
    for i, r in enumerate(results):
        if isinstance(r, WalletError):
            return i, r
        if isinstance(r, Outcome) and r.rejection is not None:
            return i, r.rejection
    return None


def _wallets(calls: list[_Call]) -> list[tuple[str, str]]:
    return sorted({(c.command.player_id, c.command.currency) for c in calls
                   if isinstance(c.command, cmd.WalletCommand)})


def _rolled_back(results: list[Outcome | Exception | None],
                 failed: tuple[int, WalletError]) -> list[Outcome | WalletError]:
    """An atomic batch undone: the failing call carries its own error, calls already
    recorded earlier keep their replays (they did happen), the others say they did not."""
    index, error = failed
    done: list[Outcome | WalletError] = []
    for i, r in enumerate(results):
        if i == index:
            done.append(error)
        elif isinstance(r, Outcome) and r.rejection is None:
            done.append(r)
        else:
            done.append(errors.Aborted(
                f"not applied: operations[{index}] failed and the atomic batch was rolled "
                "back", reason=errors.BATCH_ROLLED_BACK, metadata={"failed_index": str(index)}))
    return done


def _replay(call: _Call, fingerprint: bytes, outcome: Outcome) -> Outcome:
    if fingerprint != call.fingerprint:
        raise errors.Conflict(
            "idempotency_key was already used for a different request; use a new key for a "
            "new operation", reason=errors.IDEMPOTENCY_KEY_REUSED,
            metadata={"field": "idempotency_key", "transaction_id": str(outcome.transaction_id)})
    return outcome.as_replay()
