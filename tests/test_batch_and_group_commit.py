"""ExecuteBatch and group commit: per-operation outcomes in a shared transaction, atomic
batches rolling back whole, fixed lock order under concurrency, arrival order per wallet,
replays, per-operation scopes and validation, and the group-commit switch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

from tests.helpers import Client, key, md
from wallet_core import config
from wallet_core.server import Running, running


def bet(player: str, amount: int, idem: str | None = None) -> pb.BatchOperation:
    return pb.BatchOperation(bet=pb.BetRequest(
        player_id=player, currency="USD", amount=amount, game_id="slots", round_id="r-batch",
        idempotency_key=idem or key("bb")))


async def batch(client: Client, operations: list[pb.BatchOperation], *, atomic: bool = False,
                scope: str = "game") -> list[pb.BatchResult]:
    reply = await client.call("ExecuteBatch", pb.ExecuteBatchRequest(
        operations=operations, atomic=atomic), scope)
    assert len(reply.results) == len(operations)
    return list(reply.results)


def outcome(r: pb.BatchResult) -> str:
    kind = r.WhichOneof("outcome")
    return f"{r.error.code}/{r.error.reason}" if kind == "error" else str(kind)


async def test_one_rejected_operation_does_not_fail_its_neighbours(
        client: Client, player: str, ledger_clean: None) -> None:
    """Three bets on 5.00 of cash: 2.00 ok, 9.00 refused, 3.00 ok; each with its own result."""
    await client.funded(player, 5_00)
    results = await batch(client, [bet(player, 2_00), bet(player, 9_00), bet(player, 3_00)])
    assert [outcome(r) for r in results] == [
        "bet", "FAILED_PRECONDITION/INSUFFICIENT_FUNDS", "bet"]
    assert results[2].bet.result.balances.cash == 0
    assert (await client.balance(player)).cash == 0


async def test_atomic_batch_rolls_back_whole(client: Client, player: str,
                                             ledger_clean: None) -> None:
    """Atomic: one refused bet undoes the others; the same keys later still run afresh."""
    await client.funded(player, 5_00)
    ops = [bet(player, 2_00), bet(player, 9_00), bet(player, 3_00)]
    results = await batch(client, ops, atomic=True)
    assert [outcome(r) for r in results] == [
        "ABORTED/BATCH_ROLLED_BACK", "FAILED_PRECONDITION/INSUFFICIENT_FUNDS",
        "ABORTED/BATCH_ROLLED_BACK"]
    assert (await client.balance(player)).cash == 5_00
    ok = await batch(client, [ops[0], ops[2]], atomic=True)
    assert [outcome(r) for r in ok] == ["bet", "bet"]
    assert (await client.balance(player)).cash == 0


async def test_arrival_order_is_kept_for_one_wallet(client: Client, player: str,
                                                    ledger_clean: None) -> None:
    """A support-scoped adjustment then a bet lets the bet through; the bet first is refused:
    operations on one wallet apply in the batch's order."""
    await client.funded(player, 0)

    def adjust(amount: int) -> pb.BatchOperation:
        return pb.BatchOperation(adjust=pb.AdjustRequest(
            player_id=player, currency="USD", bucket=pb.BUCKET_CASH, amount=amount,
            reason="goodwill", idempotency_key=key("adj")))

    results = await batch(client, [bet(player, 4_00), adjust(4_00), bet(player, 4_00)],
                          scope="game")
    # The game token may bet but not adjust: that operation alone is refused.
    assert [outcome(r) for r in results] == [
        "FAILED_PRECONDITION/INSUFFICIENT_FUNDS", "PERMISSION_DENIED/SCOPE_MISSING",
        "FAILED_PRECONDITION/INSUFFICIENT_FUNDS"]
    await client.call("Adjust", adjust(4_00).adjust, "support")
    results = await batch(client, [bet(player, 4_00), bet(player, 1_00)])
    assert [outcome(r) for r in results] == ["bet", "FAILED_PRECONDITION/INSUFFICIENT_FUNDS"]


async def test_replays_inside_and_across_batches(client: Client, player: str,
                                                 ledger_clean: None) -> None:
    """A key twice in one batch runs once; the whole batch sent again replays every result."""
    await client.funded(player, 10_00)
    same = key("dup")
    ops = [bet(player, 1_00, same), bet(player, 1_00, same), bet(player, 2_00)]
    first = await batch(client, ops)
    assert first[0].bet.result.transaction_id == first[1].bet.result.transaction_id
    assert (first[0].bet.result.replay, first[1].bet.result.replay) == (False, True)
    again = await batch(client, ops)
    assert [r.bet.result.transaction_id for r in again] == [
        r.bet.result.transaction_id for r in first]
    assert all(r.bet.result.replay for r in again)
    assert (await client.balance(player)).cash == 7_00


async def test_invalid_operations_are_named_and_atomic_batches_refuse_them(
        client: Client, player: str, ledger_clean: None) -> None:
    """A bad field fails its own operation (INVALID_ARGUMENT naming it); atomic runs none."""
    await client.funded(player, 10_00)
    ops = [bet(player, 1_00), bet(player, -5), pb.BatchOperation()]
    results = await batch(client, ops)
    assert outcome(results[0]) == "bet"
    assert results[1].error.code == "INVALID_ARGUMENT" and "amount" in results[1].error.message
    assert results[2].error.code == "INVALID_ARGUMENT"
    atomic = await batch(client, [bet(player, 1_00), bet(player, -5)], atomic=True)
    assert [r.error.code for r in atomic] == ["ABORTED", "INVALID_ARGUMENT"]
    assert (await client.balance(player)).cash == 9_00


@pytest.mark.parametrize("count", [0, 1001])
async def test_batch_size_is_bounded(client: Client, player: str, count: int) -> None:
    """No operations, or more than WALLET_BATCH_OPERATIONS_MAX: INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.call("ExecuteBatch", pb.ExecuteBatchRequest(
            operations=[bet(player, 1) for _ in range(count)]), "game")
    assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                grpc.StatusCode.RESOURCE_EXHAUSTED)


async def test_concurrent_batches_on_the_same_wallets_do_not_deadlock(
        client: Client, ledger_clean: None) -> None:
    """20 batches at once, each betting on the same 5 wallets in a different order: all
    complete, and every wallet lost exactly what was bet on it."""
    players = [key("cw") for _ in range(5)]
    for p in players:
        await client.funded(p, 100_00)

    async def one(n: int) -> list[pb.BatchResult]:
        order = players[n % 5:] + players[:n % 5]
        if n % 2:
            order.reverse()
        return await batch(client, [bet(p, 1_00) for p in order])

    results = await asyncio.gather(*(one(n) for n in range(20)))
    assert all(outcome(r) == "bet" for rs in results for r in rs)
    for p in players:
        assert (await client.balance(p)).cash == 80_00


async def test_group_commit_coalesces_concurrent_calls(server: Running, client: Client,
                                                       player: str, ledger_clean: None) -> None:
    """100 concurrent single bets run in fewer transactions than calls, each answered alone."""
    group = server.ledger.group_commit
    assert group is not None, "group commit is on by default"
    await client.funded(player, 100_00)
    batches_before, calls_before = group.batches_total, group.batch_sizes_total
    answers = await asyncio.gather(*(client.bet(player, 1_00) for _ in range(100)))
    assert len({a.result.transaction_id for a in answers}) == 100
    assert group.batch_sizes_total - calls_before == 100
    assert group.batches_total - batches_before < 100
    assert (await client.balance(player)).cash == 0


async def test_group_commit_can_be_switched_off(
        custom_settings: Callable[..., config.Settings], player: str,
        ledger_clean: None) -> None:
    """WALLET_GROUP_COMMIT=false: every call runs alone, with the same results."""
    async with running(custom_settings(listen_addr="127.0.0.1:0", group_commit=False)) as run:
        assert run.ledger.group_commit is None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{run.port}") as channel:
            c = Client(channel)
            await c.funded(player, 3_00)
            answers = await asyncio.gather(*(c.bet(player, 1_00) for _ in range(5)),
                                           return_exceptions=True)
            ok = [a for a in answers if not isinstance(a, BaseException)]
            assert len(ok) == 3
            stub: Any = pb_grpc.WalletServiceStub(channel)
            reply = await stub.ExecuteBatch(pb.ExecuteBatchRequest(
                operations=[bet(player, 1_00)]), metadata=md("game"), timeout=10)
            assert outcome(reply.results[0]) == "FAILED_PRECONDITION/INSUFFICIENT_FUNDS"
