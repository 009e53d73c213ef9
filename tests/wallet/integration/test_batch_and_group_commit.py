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
from wallet_core.domain import commands as cmd
from wallet_core.domain.outcome import Outcome
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
    """On 4.00: [bet 4.00, bet 1.00] -> ok, refused; [bet 1.00, bet 4.00] would be the
    reverse. Operations on one wallet apply in the batch's order."""
    await client.funded(player, 4_00)
    results = await batch(client, [bet(player, 4_00), bet(player, 1_00)])
    assert [outcome(r) for r in results] == ["bet", "FAILED_PRECONDITION/INSUFFICIENT_FUNDS"]
    await client.funded(player, 4_00)
    results = await batch(client, [bet(player, 1_00), bet(player, 4_00)])
    assert [outcome(r) for r in results] == ["bet", "FAILED_PRECONDITION/INSUFFICIENT_FUNDS"]
    assert (await client.balance(player)).cash == 3_00


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
    group = server.operations.group_commit
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
        assert run.operations.group_commit is None
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


async def test_atomic_batch_with_a_reused_key_runs_nothing(
        client: Client, player: str, redis_client: Any, ledger_clean: None) -> None:
    """A key already used for another request refuses the whole atomic batch, whether the
    earlier answer comes from Redis or from the journal; nothing else is applied."""
    await client.funded(player, 9_00)
    used = key("used")
    await client.bet(player, 1_00, idem=used)
    for flush in (False, True):
        if flush:
            await redis_client.flushdb()
        results = await batch(client, [bet(player, 2_00, used), bet(player, 3_00)],
                              atomic=True)
        assert [outcome(r) for r in results] == [
            "ALREADY_EXISTS/IDEMPOTENCY_KEY_REUSED", "ABORTED/BATCH_ROLLED_BACK"]
    assert (await client.balance(player)).cash == 8_00


async def test_atomic_rollback_keeps_replays_of_operations_that_did_happen(
        client: Client, player: str, redis_client: Any, ledger_clean: None) -> None:
    """An operation committed earlier, replayed inside an atomic batch that fails, is still
    reported as applied (its replay), never as 'not applied'."""
    await client.funded(player, 10_00)
    done = key("done")
    [first] = await batch(client, [bet(player, 1_00, done)])
    await redis_client.flushdb()  # the replay must come from the journal
    results = await batch(client, [bet(player, 1_00, done), bet(player, 99_00)], atomic=True)
    assert outcome(results[0]) == "bet" and results[0].bet.result.replay
    assert results[0].bet.result.transaction_id == first.bet.result.transaction_id
    assert outcome(results[1]) == "FAILED_PRECONDITION/INSUFFICIENT_FUNDS"
    assert results[1].error.metadata["recorded"] == "false"
    assert (await client.balance(player)).cash == 9_00


async def test_atomic_batch_with_a_duplicate_psp_reference_says_so(
        client: Client, player: str, ledger_clean: None) -> None:
    """A PSP reference credited before is a permanent conflict, not a retryable abort."""
    await client.funded(player, 0)
    ref = key("pi")

    def dep(amount: int) -> pb.BatchOperation:
        return pb.BatchOperation(deposit=pb.DepositRequest(
            player_id=player, currency="USD", amount=amount, psp="stripe", psp_reference=ref,
            idempotency_key=key("dep")))

    assert outcome((await batch(client, [dep(5_00)], scope="payments"))[0]) == "deposit"
    results = await batch(client, [dep(5_00), dep(1_00)], atomic=True, scope="payments")
    assert [outcome(r) for r in results][0] == "ALREADY_EXISTS/DUPLICATE_PSP_REFERENCE"
    assert (await client.balance(player)).cash == 5_00


async def test_non_atomic_replays_come_from_the_journal_when_redis_is_empty(
        client: Client, player: str, redis_client: Any, ledger_clean: None) -> None:
    """With Redis flushed, a batch sent again is answered from the journal, once."""
    await client.funded(player, 5_00)
    ops = [bet(player, 1_00), bet(player, 9_00), bet(player, 2_00)]
    first = await batch(client, ops)
    await redis_client.flushdb()
    again = await batch(client, ops)
    assert [outcome(r) for r in again] == [outcome(r) for r in first]
    assert again[0].bet.result.replay and again[2].bet.result.replay
    assert again[1].error.metadata["replay"] == "true"
    assert (await client.balance(player)).cash == 2_00


async def test_a_failing_call_does_not_fail_or_reorder_its_group_neighbours(
        server: Running, client: Client, player: str, ledger_clean: None) -> None:
    """30 concurrent bets and one on a wallet that doesn't exist: the one gets NOT_FOUND,
    the 30 succeed, and the shared transaction is re-run without it rather than every call
    falling back to running alone."""
    await client.funded(player, 30_00)
    ghost = key("ghost")

    async def one(p: str) -> str:
        try:
            await client.bet(p, 1_00)
            return "ok"
        except grpc.aio.AioRpcError as err:
            return err.code().name

    answers = await asyncio.gather(*(one(player) for _ in range(15)), one(ghost),
                                   *(one(player) for _ in range(15)))
    assert sorted(answers) == ["NOT_FOUND"] + ["ok"] * 30
    assert (await client.balance(player)).cash == 0


async def test_withdrawal_operations_in_concurrent_batches_do_not_deadlock(
        client: Client, db: Any, ledger_clean: None) -> None:
    """Batches mixing bets on one wallet with a withdrawal commit on another, crossed, lock
    every wallet in id order up front: Postgres sees no deadlock."""
    p1, p2 = key("wd1"), key("wd2")
    withdrawals: dict[str, list[str]] = {p1: [], p2: []}
    for p in (p1, p2):
        await client.funded(p, 100_00)
        for _ in range(5):
            r = await client.call("ReserveWithdrawal", pb.ReserveWithdrawalRequest(
                player_id=p, currency="USD", amount=1_00, psp="stripe",
                idempotency_key=key("rw")), "payments")
            withdrawals[p].append(r.withdrawal_id)
    deadlocks = await db.fetchval("SELECT deadlocks FROM pg_stat_database "
                                  "WHERE datname = current_database()")

    def commit(wid: str) -> pb.BatchOperation:
        return pb.BatchOperation(commit_withdrawal=pb.CommitWithdrawalRequest(
            withdrawal_id=wid, idempotency_key=key("cw")))

    def deposit(p: str) -> pb.BatchOperation:
        return pb.BatchOperation(deposit=pb.DepositRequest(
            player_id=p, currency="USD", amount=1, psp="stripe", psp_reference=key("pi"),
            idempotency_key=key("dp")))

    jobs = [batch(client, [*(deposit(a) for _ in range(5)), commit(withdrawals[b][n])],
                  scope="payments")
            for n in range(5) for a, b in ((p1, p2), (p2, p1))]
    results = await asyncio.gather(*jobs)
    assert all(outcome(r) in ("deposit", "commit_withdrawal") for rs in results for r in rs)
    assert await db.fetchval("SELECT deadlocks FROM pg_stat_database "
                             "WHERE datname = current_database()") == deadlocks


async def test_rollback_before_its_bet_in_one_batch_tombstones_it(
        client: Client, player: str, ledger_clean: None) -> None:
    """[Rollback of K, Bet K] in one batch: the bet sees the tombstone written just before."""
    await client.funded(player, 5_00)
    k = key("late-bet")
    rollback = pb.BatchOperation(rollback=pb.RollbackRequest(
        player_id=player, currency="USD", game_id="slots", bet_idempotency_key=k,
        idempotency_key=key("rb")))
    results = await batch(client, [rollback, bet(player, 2_00, k)])
    assert outcome(results[0]) == "rollback"
    assert outcome(results[1]) == "FAILED_PRECONDITION/ALREADY_ROLLED_BACK"
    assert (await client.balance(player)).cash == 5_00


async def test_operation_by_withdrawal_id_and_a_bet_on_the_same_wallet_share_a_batch(
        server: Running, client: Client, player: str, ledger_clean: None) -> None:
    """[CommitWithdrawal, Bet] on one wallet in one transaction: the bet works on the wallet
    as the commit left it (reserved back to 0), never on the state read before it."""
    await client.funded(player, 100_00)
    reserved = await client.call("ReserveWithdrawal", pb.ReserveWithdrawalRequest(
        player_id=player, currency="USD", amount=10_00, psp="stripe",
        idempotency_key=key("rw")), "payments")
    commands = [
        cmd.CommitWithdrawal(withdrawal_id=int(reserved.withdrawal_id),
                             idempotency_key=key("cw")),
        cmd.Bet(player_id=player, currency="USD", amount_minor=5_00, game_id="slots",
                round_id="r1", idempotency_key=key("bet")),
    ]
    outcomes = await server.operations.execute_many("mixed-service", commands, atomic=False)
    assert all(isinstance(o, Outcome) and o.rejection is None for o in outcomes), outcomes
    b = await client.balance(player)
    assert (b.cash, b.reserved) == (85_00, 0)
