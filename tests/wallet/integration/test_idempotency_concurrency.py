"""Exactly-once under concurrency, retries, lost Redis and deadlines (real gRPC + Postgres)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections import Counter

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from wallet.v1 import wallet_service_pb2 as pb

from loadtests.ports import lease_port
from tests.helpers import Client, error_info, key
from wallet_core.server import running


async def test_200_concurrent_bets_on_100_units_exactly_100_succeed(
        client: Client, player: str, ledger_clean: None) -> None:
    """200 bets of 1.00 at once on 100.00: exactly 100 succeed, the rest are refused, balance 0.

    Like a real game service, a caller that gets UNAVAILABLE (on 2 shared cores the pool's
    acquire timeout can run out under this burst) retries with the same key."""
    await client.funded(player, 100_00)

    async def one() -> str:
        bet_key = key("burst")
        for _ in range(20):
            try:
                await client.bet(player, 1_00, idem=bet_key)
                return "ok"
            except grpc.aio.AioRpcError as err:
                if err.code() is not grpc.StatusCode.UNAVAILABLE:
                    return error_info(err).reason
                await asyncio.sleep(0.05)
        return "still unavailable after 20 tries"

    outcomes = Counter(await asyncio.gather(*(one() for _ in range(200))))
    assert outcomes == {"ok": 100, "INSUFFICIENT_FUNDS": 100}
    b = await client.balance(player)
    assert (b.cash, b.bonus, b.available) == (0, 0, 0)


async def test_same_key_50_times_at_once_has_one_effect(
        client: Client, player: str, db: asyncpg.Connection, ledger_clean: None) -> None:
    """The same bet sent 50 times concurrently executes once; all 50 answers are the same."""
    await client.funded(player, 100_00)
    bet_key = key("storm")
    answers = await asyncio.gather(*(client.bet(player, 7_00, idem=bet_key) for _ in range(50)))
    assert {a.result.transaction_id for a in answers} == {answers[0].result.transaction_id}
    assert {(a.result.balances.cash, a.cash_amount) for a in answers} == {(93_00, 7_00)}
    assert sum(not a.result.replay for a in answers) == 1
    assert (await client.balance(player)).cash == 93_00
    assert await db.fetchval("SELECT count(*) FROM wallet.journal WHERE idempotency_key = $1",
                             bet_key) == 1


@pytest.mark.parametrize("same_key", [True, False], ids=["same-key", "different-keys"])
async def test_reversal_sent_20_times_at_once_credits_once(
        client: Client, player: str, db: asyncpg.Connection, same_key: bool,
        ledger_clean: None) -> None:
    """One withdrawal reversed 20 times concurrently (one key, or 20 keys): cash comes back
    once, and all 20 answers carry the first reversal's transaction id and balances."""
    await client.funded(player, 100_00)
    w = await client.call("ReserveWithdrawal", pb.ReserveWithdrawalRequest(
        player_id=player, currency="USD", amount=30_00, psp="stripe",
        idempotency_key=key("res")), "payments")
    await client.call("CommitWithdrawal", pb.CommitWithdrawalRequest(
        withdrawal_id=w.withdrawal_id, idempotency_key=key("commit")), "payments")
    shared = key("reverse")
    answers = await asyncio.gather(*(client.call("ReverseWithdrawal", pb.ReverseWithdrawalRequest(
        withdrawal_id=w.withdrawal_id, reason="payout.failed",
        idempotency_key=shared if same_key else key("reverse")), "payments")
        for _ in range(20)))
    assert {a.result.transaction_id for a in answers} == {answers[0].result.transaction_id}
    assert {(a.result.balances.cash, a.result.balances.reserved) for a in answers} == {(100_00, 0)}
    assert sum(not a.result.replay for a in answers) == 1
    assert (await client.balance(player)).cash == 100_00
    assert await db.fetchval(
        "SELECT count(*) FROM wallet.journal WHERE kind = 'withdrawal_reverse' "
        "AND details ->> 'withdrawal_id' = $1", w.withdrawal_id) == 1


async def test_same_key_different_amount_is_refused_and_changes_nothing(
        client: Client, player: str, ledger_clean: None) -> None:
    """Reusing a key for a different request: ALREADY_EXISTS / IDEMPOTENCY_KEY_REUSED."""
    await client.funded(player, 100_00)
    bet_key = key()
    await client.bet(player, 10_00, idem=bet_key)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.bet(player, 11_00, idem=bet_key)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(caught.value).reason == "IDEMPOTENCY_KEY_REUSED"
    assert (await client.balance(player)).cash == 90_00


async def test_same_key_on_two_wallets_at_once_executes_once(
        client: Client, ledger_clean: None) -> None:
    """One key sent concurrently for two different players: one executes, one is refused."""
    players = [key("pa"), key("pb")]
    for p in players:
        await client.funded(p, 10_00)
    shared = key("shared")
    results = await asyncio.gather(*(client.bet(p, 1_00, idem=shared) for p in players),
                                   return_exceptions=True)
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == 1 and error_info(refused[0]).reason == "IDEMPOTENCY_KEY_REUSED"
    cash = sorted([(await client.balance(p)).cash for p in players])
    assert cash == [9_00, 10_00]


async def test_redis_flushed_between_call_and_retry_still_one_effect(
        client: Client, player: str, redis_client: aioredis.Redis, ledger_clean: None) -> None:
    """With the Redis cache flushed, Postgres' unique key still turns the retry into a replay."""
    await client.funded(player, 50_00)
    bet_key = key()
    first = await client.bet(player, 5_00, idem=bet_key)
    await redis_client.flushdb()
    again = await client.bet(player, 5_00, idem=bet_key)
    assert again.result.replay and again.result.transaction_id == first.result.transaction_id
    assert again.result.balances == first.result.balances
    assert (await client.balance(player)).cash == 45_00



@pytest.fixture
def private_redis() -> object:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required (scripts/services.sh installs it)")
    port = lease_port()
    folder = tempfile.mkdtemp(prefix="wallet-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", folder],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield proc, f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait()
    shutil.rmtree(folder, ignore_errors=True)


async def test_redis_stopped_between_call_and_retry_still_one_effect(
        custom_settings, private_redis, player: str, ledger_clean: None) -> None:  # type: ignore[no-untyped-def]
    """Redis killed after a call: the retry replays from Postgres and new calls keep working."""
    proc, url = private_redis
    r = aioredis.from_url(url)
    for _ in range(50):
        try:
            await r.ping()
            break
        except (OSError, aioredis.ConnectionError):
            await asyncio.sleep(0.1)
    await r.aclose()
    async with running(custom_settings(redis_url=url)) as run, \
            grpc.aio.insecure_channel(f"127.0.0.1:{run.port}") as channel:
        client = Client(channel)
        await client.funded(player, 30_00)
        bet_key = key()
        first = await client.bet(player, 3_00, idem=bet_key)
        proc.kill()
        proc.wait()
        again = await client.bet(player, 3_00, idem=bet_key)
        assert again.result.replay and again.result.transaction_id == first.result.transaction_id
        await client.bet(player, 2_00)  # new work is served without Redis
        assert (await client.balance(player)).cash == 25_00


async def test_deadline_exceeded_then_retry_gets_one_effect(
        client: Client, player: str, database_url: str, ledger_clean: None) -> None:
    """A client that gives up (deadline) and retries with the same key never pays twice."""
    await client.funded(player, 20_00)
    bet_key = key()
    locker = await asyncpg.connect(database_url)
    try:
        async with locker.transaction():
            # Hold the wallet's row lock so the bet blocks past the client's deadline.
            await locker.execute("SELECT 1 FROM wallet.wallets WHERE player_id = $1 FOR UPDATE",
                                 player)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.stub.Bet(pb.BetRequest(
                    player_id=player, currency="USD", amount=4_00, game_id="slots",
                    round_id="r1", idempotency_key=bet_key),
                    metadata=[("authorization", "Bearer test-game-token-0123456789")],
                    timeout=0.3)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await locker.close()
    retried = await client.bet(player, 4_00, idem=bet_key)
    again = await client.bet(player, 4_00, idem=bet_key)
    assert again.result.transaction_id == retried.result.transaction_id
    assert (await client.balance(player)).cash == 16_00
