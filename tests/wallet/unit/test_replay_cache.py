"""The in-process tier of the idempotency cache: bounded by count, least recently used
dropped first, filled by writes and by Redis hits, and enough on its own when Redis is
absent. The Redis keys it writes are checked in
tests/wallet/integration/test_replay_cache_redis.py."""

from __future__ import annotations

from datetime import UTC, datetime

from wallet_core.domain.ledger import Balances
from wallet_core.domain.outcome import Outcome
from wallet_core.idempotency_cache import IdempotencyCache


def _outcome(transaction_id: int) -> Outcome:
    return Outcome(transaction_id, datetime(2026, 1, 1, tzinfo=UTC), "bet", "USD",
                   Balances(1, 0, 0), {"cash_minor": 1})


async def test_recent_outcomes_are_bounded_and_least_recently_used_go_first() -> None:
    """Three entries into a tier of two: the one not touched since it was written goes."""
    cache = IdempotencyCache(None, ttl_s=60, timeout_ms=10, recent_entries_max=2)
    await cache.put("game", "a", "p1", b"fa", _outcome(1))
    await cache.put("game", "b", "p1", b"fb", _outcome(2))
    assert cache.recent("game", "a") is not None  # touched: "b" is now the oldest
    await cache.put("game", "c", "p2", b"fc", _outcome(3))
    assert cache.recent("game", "b") is None
    found, redis_answered = await cache.get_many(
        [("game", "a", "p1"), ("game", "b", "p1"), ("game", "c", "p2")])
    assert [e[1].transaction_id if e else None for e in found] == [1, None, 3]
    assert not redis_answered, "no Redis: a miss proves nothing"
    assert await cache.get("other-caller", "a") is None, "keys are per caller"


async def test_the_tier_can_be_switched_off() -> None:
    """recent_entries_max=0: nothing is kept in the process."""
    cache = IdempotencyCache(None, ttl_s=60, timeout_ms=10, recent_entries_max=0)
    await cache.put_many([("game", "a", "p1", b"fa", _outcome(1))])
    assert cache.recent("game", "a") is None
    assert await cache.get("game", "a") is None
