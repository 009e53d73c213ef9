"""Replays and reused keys when the cache has forgotten the key: the journal still decides.

The wallet skips the journal lookup for bets and wins whose keys Redis says it does not know
(engine.run_batch, `likely_new`). These tests take the cache away between a call and its
retry (no in-process tier, Redis flushed: an expired or lost entry) and hold every command
kind to the contract: the same request replays what was recorded, another request under the
key is IDEMPOTENCY_KEY_REUSED, whatever the wallet's state now says. Group commit on and off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from wallet.v1 import wallet_service_pb2 as pb

from tests.helpers import Client, error_info, key
from wallet_core import config
from wallet_core.server import running

# A Redis database of this module's own: flushing it touches no other test's cache.
REDIS_DB = 11


@pytest.fixture(params=[True, False], ids=["group-commit", "no-group-commit"])
async def forgetful(request: pytest.FixtureRequest, redis_url: str,
                    custom_settings: Callable[..., config.Settings],
                    ) -> AsyncIterator[tuple[Client, aioredis.Redis]]:
    """A wallet with no in-process replay tier, and its Redis (to flush)."""
    url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    settings = custom_settings(listen_addr="127.0.0.1:0", redis_url=url,
                               replay_cache_entries_max=0, group_commit=request.param)
    r = aioredis.from_url(url)
    try:
        async with running(settings) as run, \
                grpc.aio.insecure_channel(f"127.0.0.1:{run.port}") as channel:
            yield Client(channel), r
            await run.operations.close()  # background cache writes done before the flush
    finally:
        await r.aclose()


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def forget(r: aioredis.Redis) -> None:
    await r.flushdb()


async def reserve(client: Client, player: str, amount: int) -> str:
    reply = await client.call("ReserveWithdrawal", pb.ReserveWithdrawalRequest(
        player_id=player, currency="USD", amount=amount, psp="stripe",
        idempotency_key=key("wd")), "payments")
    return str(reply.withdrawal_id)


async def test_cancel_under_a_reused_key_is_refused_not_replayed_by_state(
        forgetful: tuple[Client, aioredis.Redis], player: str, ledger_clean: None) -> None:
    """A cancel recorded under K, the cache forgotten: K with another reason is
    IDEMPOTENCY_KEY_REUSED, K with the same request replays the recorded cancel."""
    client, r = forgetful
    await client.funded(player, 50_00)
    withdrawal = await reserve(client, player, 10_00)
    cancel_key = key("cancel")

    def cancel(reason: str) -> Any:
        return client.call("CancelWithdrawal", pb.CancelWithdrawalRequest(
            withdrawal_id=withdrawal, reason=reason, idempotency_key=cancel_key), "payments")

    first = await cancel("player asked")
    await forget(r)
    err = await refused(cancel("another reason"))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, (err.code(), err.details())
    assert error_info(err).reason == "IDEMPOTENCY_KEY_REUSED"
    await forget(r)
    again = await cancel("player asked")
    assert again.result.replay and again.result.transaction_id == first.result.transaction_id
    assert (await client.balance(player)).cash == 50_00


async def test_a_refused_reversal_replays_its_refusal_after_the_state_changed(
        forgetful: tuple[Client, aioredis.Redis], player: str, ledger_clean: None) -> None:
    """Reverse refused (not committed) under K; the withdrawal is then committed and
    reversed under another key; K again, the cache forgotten: the recorded refusal."""
    client, r = forgetful
    await client.funded(player, 50_00)
    withdrawal = await reserve(client, player, 10_00)
    reverse_key = key("rev")

    def reverse(idem: str) -> Any:
        return client.call("ReverseWithdrawal", pb.ReverseWithdrawalRequest(
            withdrawal_id=withdrawal, reason="returned", idempotency_key=idem), "payments")

    first = await refused(reverse(reverse_key))
    assert error_info(first).reason == "WITHDRAWAL_NOT_COMMITTED"
    await client.call("CommitWithdrawal", pb.CommitWithdrawalRequest(
        withdrawal_id=withdrawal, idempotency_key=key("commit")), "payments")
    await reverse(key("rev2"))
    await forget(r)
    again = await refused(reverse(reverse_key))
    info = error_info(again)
    assert (again.code(), info.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                          "WITHDRAWAL_NOT_COMMITTED")
    assert info.metadata["replay"] == "true"
    assert info.metadata["transaction_id"] == error_info(first).metadata["transaction_id"]
    assert (await client.balance(player)).cash == 50_00


async def test_a_bet_key_reused_for_another_player_is_refused_not_a_domain_error(
        forgetful: tuple[Client, aioredis.Redis], player: str, ledger_clean: None) -> None:
    """Bet under K for one player, the cache forgotten: K for a player with no wallet is
    IDEMPOTENCY_KEY_REUSED (not WALLET_NOT_FOUND), and the same bet replays once."""
    client, r = forgetful
    await client.funded(player, 20_00)
    bet_key = key("bet")
    first = await client.bet(player, 3_00, idem=bet_key)
    await forget(r)
    err = await refused(client.bet(f"{player}-nowallet", 3_00, idem=bet_key))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, (err.code(), err.details())
    assert error_info(err).reason == "IDEMPOTENCY_KEY_REUSED"
    await forget(r)
    again = await client.bet(player, 3_00, idem=bet_key)
    assert again.result.replay and again.result.transaction_id == first.result.transaction_id
    assert (await client.balance(player)).cash == 17_00


async def test_a_deposit_retried_after_the_cache_forgot_it_replays(
        forgetful: tuple[Client, aioredis.Redis], player: str, ledger_clean: None) -> None:
    """A deposit's retry meets both its key and its psp_reference taken: a replay, never
    DUPLICATE_PSP_REFERENCE, and the cash is credited once."""
    client, r = forgetful
    await client.open(player)
    dep_key = key("dep")
    first = await client.deposit(player, 7_00, idem=dep_key)
    await forget(r)
    again = await client.deposit(player, 7_00, idem=dep_key)
    assert again.result.replay and again.result.transaction_id == first.result.transaction_id
    assert (await client.balance(player)).cash == 7_00
