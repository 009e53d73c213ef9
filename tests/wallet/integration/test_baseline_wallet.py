"""The benchmark's yardstick (loadtests/baseline_wallet.py) is a correct wallet: started as a
process on a leased port, over real gRPC on real Postgres and Redis, its Bet debits once per
idempotency key, replays the recorded answer, refuses an overdraft and a wrong token.

A yardstick that cut corners would flatter the real wallet's ratios, so this holds it to the
same contract the benchmark relies on.
"""

from __future__ import annotations

import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

from loadtests.baseline_wallet import CALLER
from loadtests.ports import lease_port
from tests.faults.processes import Proc, wait_serving

FUNDED_MINOR = 10_00
CALL_TIMEOUT_S = 10.0


@pytest.fixture
async def baseline(database_url: str, redis_url: str,
                   tmp_path: Path) -> AsyncIterator[tuple[pb_grpc.WalletServiceStub, str]]:
    """A running baseline server and a stub for it; (stub, its token)."""
    port = lease_port()
    token = secrets.token_hex(16)
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "BASELINE_LISTEN_ADDR": f"127.0.0.1:{port}", "BASELINE_TOKEN": token}
    proc = Proc("baseline", [sys.executable, "-m", "loadtests.baseline_wallet"], env,
                tmp_path / "baseline.log")
    proc.start()
    try:
        await wait_serving(port, proc)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.WalletServiceStub(channel), token
    finally:
        proc.stop()


async def _fund(database_url: str, player: str, cash_minor: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO baseline.wallets (player_id, currency, cash) "
                           "VALUES ($1, 'USD', $2)", player, cash_minor)
    finally:
        await conn.close()


async def _cash(database_url: str, player: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT cash FROM baseline.wallets "
                                       "WHERE player_id = $1", player))
    finally:
        await conn.close()


def _bet(player: str, amount_minor: int, key: str) -> pb.BetRequest:
    return pb.BetRequest(player_id=player, currency="USD", amount=amount_minor,
                         game_id="slots", round_id=key, idempotency_key=key)


async def test_bet_debits_once_replays_and_refuses(
        baseline: tuple[pb_grpc.WalletServiceStub, str], database_url: str,
        redis_client: aioredis.Redis) -> None:
    """A Bet debits; its key replays the same answer marked replay and debits once, also
    when Redis lost it (from the journal); an overdraft is FAILED_PRECONDITION and changes
    nothing; a wrong token is UNAUTHENTICATED."""
    stub, token = baseline
    md = (("authorization", f"Bearer {token}"),)
    player = f"base-{uuid.uuid4().hex[:12]}"
    await _fund(database_url, player, FUNDED_MINOR)
    key = f"k-{uuid.uuid4().hex}"

    first = await stub.Bet(_bet(player, 3_00, key), metadata=md, timeout=CALL_TIMEOUT_S)
    assert (first.result.balances.cash, first.cash_amount, first.result.replay) == (7_00, 3_00,
                                                                                     False)
    again = await stub.Bet(_bet(player, 3_00, key), metadata=md, timeout=CALL_TIMEOUT_S)
    assert again.result.replay
    assert again.result.transaction_id == first.result.transaction_id
    assert again.result.balances == first.result.balances
    assert await _cash(database_url, player) == 7_00

    assert await redis_client.delete(f"baseline:{CALLER}:{key}") == 1
    from_journal = await stub.Bet(_bet(player, 3_00, key), metadata=md, timeout=CALL_TIMEOUT_S)
    assert from_journal == again
    assert await _cash(database_url, player) == 7_00

    with pytest.raises(grpc.aio.AioRpcError) as overdraft:
        await stub.Bet(_bet(player, 8_00, f"k-{uuid.uuid4().hex}"), metadata=md,
                       timeout=CALL_TIMEOUT_S)
    assert overdraft.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await _cash(database_url, player) == 7_00

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Bet(_bet(player, 1_00, f"k-{uuid.uuid4().hex}"), timeout=CALL_TIMEOUT_S,
                       metadata=(("authorization", f"Bearer {token}x"),))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await _cash(database_url, player) == 7_00
