"""The front door of every money-moving call: idempotency first, then the batch engine.

The flow of a call:
1. The answering process's own memory, then Redis: a recorded outcome for (caller, key) is
   replayed without Postgres (the group-commit batch asks Redis for all its calls at once).
2. Postgres: the journal row for (caller, key), if any, is replayed (or refused as
   IDEMPOTENCY_KEY_REUSED when the request differs).
3. Otherwise, in one transaction (engine.py): lock the wallets concerned, apply the domain
   rules to a Draft, write journal + postings + balances (+ the operation's own rows). A
   business rejection is recorded the same way, without postings, so its retry replays the
   same rejection.
4. A concurrent request with the same key loses on the journal's unique constraint after the
   winner commits; it retries, finds the winner's row and replays it.
Transient failures (database down, deadline) record nothing, so a retry executes afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from wallet_core import metrics
from wallet_core.db import DB_DOWN, database_unavailable
from wallet_core.domain import commands as cmd
from wallet_core.domain.errors import WalletError
from wallet_core.domain.money import Currency
from wallet_core.domain.outcome import Outcome
from wallet_core.group_commit import GroupCommit
from wallet_core.idempotency_cache import IdempotencyCache
from wallet_core.operations.calls import (
    Call,
    cache_key,
    refusal,
    replay,
    replay_or_error,
    rolled_back,
)
from wallet_core.operations.engine import BatchEngine
from wallet_core.operations.handlers import Handlers
from wallet_core.storage import repo

SYSTEM_CALLER = "system"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class GroupCommitSettings:
    batch_max: int
    batches_max: int


class Operations:
    """Every money-moving command, exactly once per (caller, key)."""

    def __init__(self, *, pool: asyncpg.Pool, cache: IdempotencyCache,
                 currencies: dict[str, Currency], pool_acquire_timeout_ms: int,
                 conflict_retries_max: int, clock: Callable[[], datetime] = utc_now,
                 group_commit: GroupCommitSettings | None = None) -> None:
        self._group: GroupCommit[Call, Outcome, Exception] | None = None
        if group_commit is not None:
            self._group = GroupCommit(self._run_group, batch_max=group_commit.batch_max,
                                      batches_max=group_commit.batches_max)
        self._pool = pool
        self._cache = cache
        self.currencies = currencies
        # The time the rules see (limits' periods, bonus expiry); reads use it too.
        self.clock = clock
        self._acquire_timeout_s = pool_acquire_timeout_ms / 1000
        self._engine = BatchEngine(pool=pool, handlers=Handlers(clock),
                                   pool_acquire_timeout_ms=pool_acquire_timeout_ms,
                                   conflict_retries_max=conflict_retries_max)

    # -- the idempotent execution every command goes through -------------------------------

    async def execute(self, caller: str, command: cmd.Command) -> Outcome:
        call = Call(caller, command, command.fingerprint())
        if (recent := self._cache.recent(caller, command.idempotency_key)) is not None:
            return replay(call, *recent)  # answered here, no round trip at all
        if self._group is not None:
            try:  # the batch asks Redis for all its calls at once, and caches their outcomes
                return await self._group.submit(call)
            except DB_DOWN as exc:
                raise database_unavailable() from exc
        cached = await self._cache.get(*cache_key(call))
        if cached is not None:
            return replay(call, *cached)
        try:
            outcome = await self._engine.alone(call)
        except DB_DOWN as exc:
            raise database_unavailable() from exc
        await self._cache.put(*cache_key(call), call.fingerprint, outcome)
        return outcome

    async def _run_group(self, calls: list[Call]) -> list[Outcome | Exception]:
        """A group-commit batch: replays from one Redis MGET, the rest in one transaction,
        their outcomes cached in one Redis pipeline (two round trips per batch, not two per
        call)."""
        metrics.GROUP_COMMIT_BATCH_SIZE.observe(len(calls))
        assert self._group is not None
        idle = self._group.batches_in_flight <= 1  # this batch is the only one running
        results = await self._through_cache(calls, atomic=False, one_alone=idle)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    async def _through_cache(self, calls: list[Call], *, atomic: bool,
                             one_alone: bool = True) -> list[Outcome | Exception | None]:
        """Answers what Redis knows, runs the rest, caches what ran; an atomic batch runs
        only when nothing in it is refused already."""
        cached, redis_answered = await self._cache.get_many([cache_key(c) for c in calls])
        results: list[Outcome | Exception | None] = [
            None if hit is None else replay_or_error(call, hit)
            for call, hit in zip(calls, cached, strict=True)]
        if atomic and (refused := refusal(results)) is not None:
            return list(rolled_back(results, refused))
        todo = [i for i, r in enumerate(results) if r is None]
        rest = [calls[i] for i in todo]
        ran = (await self._engine.run_atomic(rest) if atomic else await self._engine.run_batch(
            rest, likely_new=redis_answered, one_alone=one_alone))
        for i, result in zip(todo, ran, strict=True):
            results[i] = result
        await self._cache.put_many([(*cache_key(calls[i]), calls[i].fingerprint, r)
                                    for i in todo if isinstance(r := results[i], Outcome)])
        return results

    @property
    def group_commit(self) -> GroupCommit[Call, Outcome, Exception] | None:
        return self._group

    async def close(self) -> None:
        if self._group is not None:
            await self._group.close()

    async def execute_many(self, caller: str, commands: list[cmd.Command], *,
                           atomic: bool) -> list[Outcome | WalletError]:
        """ExecuteBatch: every command with its own key and result, in one transaction when
        they allow it; `atomic` commits all of them or none."""
        calls = [Call(caller, c, c.fingerprint()) for c in commands]
        try:
            results = await self._through_cache(calls, atomic=atomic)
        except DB_DOWN as exc:
            raise database_unavailable() from exc
        done: list[Outcome | WalletError] = []
        for r in results:
            if isinstance(r, Exception) and not isinstance(r, WalletError):
                raise r  # a bug met by one operation of an ExecuteBatch: INTERNAL for the call
            assert r is not None, "every operation of a batch has an answer"
            done.append(r)
        return done

    # -- maintenance -------------------------------------------------------------------------

    async def expire_due_bonuses(self, batch_size_max: int) -> int:
        """Expire bonuses past their expiry (bounded batch); returns how many were handled."""
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            due = await repo.due_bonus_ids(conn, batch_size_max)
        for bonus_id in due:
            await self.execute(SYSTEM_CALLER, cmd.ExpireBonus(
                bonus_id=bonus_id, idempotency_key=f"bonus-expire:{bonus_id}"))
        return len(due)
