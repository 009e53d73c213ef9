"""Redis fast path for idempotent replays; Postgres stays the arbiter.

A completed outcome is cached under (caller, key) with a TTL, so a retry is answered without
touching Postgres. Redis is only a cache: any failure (down, slow, flushed) makes lookups
miss and writes no-ops, and the operation falls through to Postgres, whose unique
constraint decides. After a failure, Redis is skipped for `retry_after_ms` so an outage
costs one timeout, not one per request.

In front of Redis sits a small in-process tier of the most recent outcomes (bounded by
count, least recently used dropped first): a retry that reaches the process that answered
first, or already replayed it, costs no Redis round trip. Committed outcomes never change, so
the tier needs no expiry of its own; it lives and dies with the process, which serves one
database.

Writes to Redis happen after the reply, in the background: the journal row committed with
the outcome is what makes a retry safe, so the cache write has no business on the caller's
latency. A retry that arrives before the write lands is answered by the in-process tier or by
the journal. At most WRITES_IN_FLIGHT_MAX writes run at once; past that a batch's outcomes are
not cached in Redis at all (counted by the wallet_redis_writes_skipped metric), so a slow
Redis never grows a queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from wallet_core import metrics
from wallet_core.domain.outcome import Outcome

log = logging.getLogger(__name__)

# Background Redis writes at once (each one pipelined round trip for a whole batch).
WRITES_IN_FLIGHT_MAX = 16
# How long close() waits for the writes still in flight before it drops them.
CLOSE_WRITES_TIMEOUT_S = 2.0


class IdempotencyCache:
    def __init__(self, client: aioredis.Redis | RedisCluster | None, *, ttl_s: int,
                 timeout_ms: int,
                 retry_after_ms: int = 1000, namespace: str = "",
                 recent_entries_max: int = 0) -> None:
        self._client = client
        self._recent: OrderedDict[tuple[str, str], tuple[bytes, Outcome]] = OrderedDict()
        self._recent_max = recent_entries_max
        # The ledger database's instance id: entries of another database never match.
        self.namespace = namespace
        self._ttl_s = ttl_s
        self._timeout_s = timeout_ms / 1000
        self._retry_after_s = retry_after_ms / 1000
        self._down_until = 0.0
        self._writes: set[asyncio.Task[None]] = set()

    def _key(self, caller: str, key: str, player: str) -> str:
        # The {player} hash tag puts one player's keys in one Redis Cluster slot and spreads
        # players over the cluster like Citus spreads them over shards (docs/SCALING.md).
        # Operations named by withdrawal or bonus id have no player; they tag by caller.
        tag = f"p:{player}" if player else f"c:{caller}"
        return f"wallet:idem:{self.namespace}:{{{tag}}}:{caller}:{key}"

    def recent(self, caller: str, key: str) -> tuple[bytes, Outcome] | None:
        """The in-process tier alone: no I/O."""
        hit = self._recent.get((caller, key))
        if hit is not None:
            self._recent.move_to_end((caller, key))
        return hit

    def _remember(self, caller: str, key: str, entry: tuple[bytes, Outcome]) -> None:
        if self._recent_max <= 0:
            return
        self._recent[(caller, key)] = entry
        self._recent.move_to_end((caller, key))
        while len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    def redis_usable(self) -> bool:
        """Whether lookups go to Redis now (configured, and not skipped after a failure)."""
        return self._usable()

    def _usable(self) -> bool:
        return self._client is not None and time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self._retry_after_s
        log.warning("redis %s failed; serving from Postgres", what,
                    extra={"error": type(exc).__name__})

    async def get(self, caller: str, key: str, player: str = "") -> tuple[bytes, Outcome] | None:
        if (hit := self.recent(caller, key)) is not None:
            return hit
        if not self._usable():
            return None
        assert self._client is not None
        try:
            async with asyncio.timeout(self._timeout_s):
                raw = await self._client.get(self._key(caller, key, player))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("get", exc)
            return None
        if raw is None:
            return None
        try:
            entry = _decode(raw if isinstance(raw, bytes) else raw.encode())
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable idempotency cache entry")
            return None
        self._remember(caller, key, entry)
        return entry

    async def get_many(self, pairs: list[tuple[str, str, str]],
                       ) -> tuple[list[tuple[bytes, Outcome] | None], bool]:
        """One MGET for what the in-process tier does not know; misses (and any failure)
        are None. The flag says whether Redis answered for every miss: a miss it answered
        is most likely a new key (it is not proof: entries expire, and Redis may have lost
        them), one it did not answer says nothing."""
        found = [self.recent(c, k) for c, k, _ in pairs]
        ask = [i for i, hit in enumerate(found) if hit is None]
        if not ask:
            return found, True
        if not self._usable():
            return found, False
        assert self._client is not None
        try:
            async with asyncio.timeout(self._timeout_s):
                keys = [self._key(*pairs[i]) for i in ask]
                # A cluster spreads players over slots: one MGET per node that holds some.
                raws = await (self._client.mget_nonatomic(keys)
                              if isinstance(self._client, RedisCluster)
                              else self._client.mget(keys))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("mget", exc)
            return found, False
        answered = True
        for i, raw in zip(ask, raws, strict=True):
            if raw is None:
                continue
            try:
                found[i] = _decode(raw if isinstance(raw, bytes) else raw.encode())
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring unreadable idempotency cache entry")
                answered = False  # the key exists; only the journal can say what it holds
                continue
            self._remember(pairs[i][0], pairs[i][1], found[i])  # type: ignore[arg-type]
        return found, answered

    async def put_many(self, entries: list[tuple[str, str, str, bytes, Outcome]]) -> None:
        """Remember a batch's outcomes now, and write them to Redis in the background in one
        pipelined round trip: (caller, key, player, fingerprint, outcome) each, player empty
        when the operation names none. Returns without waiting for Redis."""
        for caller, key, _, fingerprint, outcome in entries:
            self._remember(caller, key, (fingerprint, outcome))
        if not entries or not self._usable():
            return
        if len(self._writes) >= WRITES_IN_FLIGHT_MAX:
            metrics.REDIS_WRITES_SKIPPED.inc()
            return
        task = asyncio.get_running_loop().create_task(self._write(entries))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def put(self, caller: str, key: str, player: str, fingerprint: bytes,
                  outcome: Outcome) -> None:
        await self.put_many([(caller, key, player, fingerprint, outcome)])

    async def _write(self, entries: list[tuple[str, str, str, bytes, Outcome]]) -> None:
        assert self._client is not None
        try:
            async with asyncio.timeout(self._timeout_s):
                pipe = self._client.pipeline(transaction=False)
                for caller, key, player, fingerprint, outcome in entries:
                    pipe.set(self._key(caller, key, player), _encode(fingerprint, outcome),
                             ex=self._ttl_s)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("set", exc)

    async def drain(self, timeout_s: float = CLOSE_WRITES_TIMEOUT_S) -> None:
        """Wait (bounded) for the background writes in flight."""
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=timeout_s)

    async def close(self) -> None:
        await self.drain()
        for task in list(self._writes):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()


def _encode(fingerprint: bytes, outcome: Outcome) -> bytes:
    entry: dict[str, Any] = {
        "fp": fingerprint.hex(), "id": outcome.transaction_id,
        "at": outcome.created_at.isoformat(), "kind": outcome.kind,
        "status": "rejected" if outcome.rejection else "ok",
        "reason": outcome.rejection.reason if outcome.rejection else None,
        "record": outcome.to_record(),
    }
    return orjson.dumps(entry)


def _decode(raw: bytes) -> tuple[bytes, Outcome]:
    entry = orjson.loads(raw)
    outcome = Outcome.from_record(
        transaction_id=int(entry["id"]), created_at=datetime.fromisoformat(entry["at"]),
        kind=entry["kind"], status=entry["status"], reason=entry["reason"],
        record=entry["record"])
    return bytes.fromhex(entry["fp"]), outcome
