"""The Redis keys of the idempotency cache, as a real wallet writes them: tagged by player.

The wallet writes them after it answered (idempotency_cache.py), so the test waits for them,
bounded.
"""

from __future__ import annotations

import asyncio
from typing import Any

from wallet.v1 import wallet_service_pb2 as pb

from tests.helpers import Client, key

WRITE_BEHIND_WAIT_S = 5.0


async def keys_eventually(redis_client: Any, pattern: str) -> list[bytes]:
    """The keys matching `pattern` once at least one is there, or [] after the bound."""
    async with asyncio.timeout(WRITE_BEHIND_WAIT_S):
        while not (found := await redis_client.keys(pattern)):
            await asyncio.sleep(0.02)
    return list(found)


async def test_cached_outcomes_are_tagged_by_player(client: Client, player: str,
                                                    redis_client: Any) -> None:
    """A player's outcomes share the {p:<player>} hash tag (one Redis Cluster slot per player,
    players spread over the cluster); an operation named by id is tagged by its caller."""
    await client.funded(player, 5_00)
    bet_key = key("tag")
    await client.bet(player, 1_00, idem=bet_key)
    tagged = await keys_eventually(redis_client,
                                   f"wallet:idem:*:{{p:{player}}}:game-service:{bet_key}")
    assert len(tagged) == 1
    grant = await client.grant(player, 1_00, 50_00)
    forfeit = key("ff")
    await client.call("ForfeitBonus", pb.ForfeitBonusRequest(
        bonus_id=grant.bonus_id, idempotency_key=forfeit), "bonus")
    assert len(await keys_eventually(
        redis_client, f"wallet:idem:*:{{c:bonus-service}}:bonus-service:{forfeit}")) == 1
