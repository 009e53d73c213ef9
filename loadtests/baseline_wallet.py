"""`python -m loadtests.baseline_wallet`: the textbook wallet the benchmark measures against.

Issue 14 states every headline figure of the benchmark against a yardstick: the wallet one
would write first. This is it, kept that way on purpose (no batching, no group commit, no
cache in the process). It is a grpc.aio server on uvloop that speaks the real wallet's
`wallet.v1.WalletService`, so the benchmark's load processes drive it unchanged, and its Bet
does, one call at a time, over an asyncpg pool of 8 connections:

    Redis GET key → BEGIN → SELECT … FOR UPDATE → UPDATE balance → INSERT journal → COMMIT
    → Redis SET key

A key found in Redis answers the stored response with replay=true; so does a key already in
the journal (its Redis copy lost), found by the journal's unique constraint. Not enough
cash is FAILED_PRECONDITION, an unknown wallet NOT_FOUND, a wrong bearer token
UNAUTHENTICATED. Only Bet and the gRPC health service are served; every other method is
UNIMPLEMENTED, and players are funded by SQL (the benchmark inserts them in bulk). What the
real wallet does and this does not: bonus money, postings, bets and rounds, per-method
scopes, a fingerprint that refuses a key reused for another request, per-call deadlines.

It creates its own schema `baseline` (wallets, journal; money in integer minor units) at
start-up. Environment: DATABASE_URL, REDIS_URL, BASELINE_LISTEN_ADDR (host:port; port 0
binds any free port and logs it) and BASELINE_TOKEN (the one caller's bearer token).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import signal
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import redis.asyncio as aioredis
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # health.aio, for type checkers
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
else:
    Context = grpc.aio.ServicerContext

log = logging.getLogger("loadtests.baseline_wallet")

# How the benchmark finds this server's Postgres backends (pg_stat_activity) to count their CPU.
APPLICATION_NAME = "wallet-baseline"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WalletService"].full_name
# One caller: the journal's idempotency keys are unique per caller, as in the real wallet.
CALLER = "bench"
POOL_SIZE = 8
POOL_ACQUIRE_TIMEOUT_S = 5.0     # 64 calls in flight queue for 8 connections
STATEMENT_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0
REDIS_TIMEOUT_S = 0.5            # a miss costs one more Postgres lookup, never a wrong answer
REDIS_CONNECTIONS_MAX = 64       # a blocking pool: calls beyond it wait, up to the timeout
REPLAY_TTL_S = 86_400
CONCURRENT_RPCS_MAX = 256        # the real wallet's default
SHUTDOWN_GRACE_S = 2.0
REDIS_FAILED_LOG = "Redis failed"  # counted by the benchmark in this server's log

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS baseline;
CREATE TABLE IF NOT EXISTS baseline.wallets (
    player_id text   NOT NULL,
    currency  text   NOT NULL,
    cash      bigint NOT NULL CONSTRAINT cash_not_negative CHECK (cash >= 0),
    PRIMARY KEY (player_id, currency)
);
CREATE TABLE IF NOT EXISTS baseline.journal (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    caller          text   NOT NULL,
    idempotency_key text   NOT NULL,
    player_id       text   NOT NULL,
    currency        text   NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    cash_after      bigint NOT NULL,
    response        bytea  NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT journal_key_unique UNIQUE (caller, idempotency_key)
);
"""
LOCK_WALLET = """
SELECT cash FROM baseline.wallets WHERE player_id = $1 AND currency = $2 FOR UPDATE
"""
SET_CASH = "UPDATE baseline.wallets SET cash = $3 WHERE player_id = $1 AND currency = $2"
INSERT_JOURNAL = """
INSERT INTO baseline.journal (caller, idempotency_key, player_id, currency, amount,
                              cash_after, response)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
RECORDED_RESPONSE = """
SELECT response FROM baseline.journal WHERE caller = $1 AND idempotency_key = $2
"""


class Refused(Exception):
    """An expected refusal, with the status the caller gets."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    listen_addr: str
    token: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        names = ("DATABASE_URL", "REDIS_URL", "BASELINE_LISTEN_ADDR", "BASELINE_TOKEN")
        missing = [n for n in names if not env.get(n)]
        if missing:
            raise SystemExit(f"baseline_wallet: {', '.join(missing)} required")
        return cls(env["DATABASE_URL"], env["REDIS_URL"], env["BASELINE_LISTEN_ADDR"],
                   env["BASELINE_TOKEN"])


class BaselineWallet(pb_grpc.WalletServiceServicer):
    def __init__(self, pool: asyncpg.Pool, redis: aioredis.Redis, token: str) -> None:
        self._pool = pool
        self._redis = redis
        self._authorization = f"Bearer {token}".encode()

    async def Bet(self, request: pb.BetRequest, context: Context) -> pb.BetResponse:
        try:
            self._authenticate(context)
            if request.amount <= 0 or not request.idempotency_key or not request.player_id:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              "amount > 0, player_id and idempotency_key are required")
            cache_key = f"baseline:{CALLER}:{request.idempotency_key}"
            stored = await self._redis_get(cache_key)
            if stored is not None:
                return _replayed(stored)
            try:
                response = await self._debit(request)
            except asyncpg.UniqueViolationError:
                return _replayed(await self._recorded(request.idempotency_key))
            await self._redis_set(cache_key, response.SerializeToString())
            return response
        except Refused as exc:
            await context.abort(exc.code, str(exc))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.exception("Bet failed")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the database is unavailable")
        raise AssertionError("unreachable: context.abort raises")

    def _authenticate(self, context: Context) -> None:
        for name, value in context.invocation_metadata() or ():
            if name == "authorization" and isinstance(value, str):
                if hmac.compare_digest(value.encode(), self._authorization):
                    return
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, "unknown or missing bearer token")

    async def _debit(self, request: pb.BetRequest) -> pb.BetResponse:
        """One transaction: lock the wallet row, write the balance, journal the answer."""
        key, player, currency = request.idempotency_key, request.player_id, request.currency
        async with self._pool.acquire(timeout=POOL_ACQUIRE_TIMEOUT_S) as conn, \
                conn.transaction():
            cash = await conn.fetchval(LOCK_WALLET, player, currency)
            if cash is None:
                raise Refused(grpc.StatusCode.NOT_FOUND, "no such wallet")
            if cash < request.amount:
                raise Refused(grpc.StatusCode.FAILED_PRECONDITION, "insufficient funds")
            cash_after = cash - request.amount
            await conn.execute(SET_CASH, player, currency, cash_after)
            response = _response(request, cash_after)
            await conn.execute(INSERT_JOURNAL, CALLER, key, player, currency, request.amount,
                               cash_after, response.SerializeToString())
        return response

    async def _recorded(self, key: str) -> bytes:
        async with self._pool.acquire(timeout=POOL_ACQUIRE_TIMEOUT_S) as conn:
            stored = await conn.fetchval(RECORDED_RESPONSE, CALLER, key)
        assert isinstance(stored, bytes), "a unique violation without a journal row"
        return stored

    async def _redis_get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(key)
        except (aioredis.RedisError, OSError):
            log.warning("%s (GET); looking in Postgres", REDIS_FAILED_LOG)
            return None
        return value if isinstance(value, bytes) else None

    async def _redis_set(self, key: str, value: bytes) -> None:
        try:
            await self._redis.set(key, value, ex=REPLAY_TTL_S)
        except (aioredis.RedisError, OSError):
            log.warning("%s (SET); a replay will read the journal", REDIS_FAILED_LOG)


def _response(request: pb.BetRequest, cash_after: int) -> pb.BetResponse:
    response = pb.BetResponse(
        result=pb.OperationResult(
            transaction_id=str(uuid.uuid4()),
            balances=pb.Balances(currency=request.currency, cash=cash_after,
                                 available=cash_after)),
        cash_amount=request.amount)
    response.result.created_at.GetCurrentTime()
    return response


def _replayed(stored: bytes) -> pb.BetResponse:
    response = pb.BetResponse.FromString(stored)
    response.result.replay = True
    return response


async def serve(settings: Settings) -> None:
    """Pool, Redis client and server, all made on the running loop; until SIGTERM/SIGINT."""
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=POOL_SIZE, max_size=POOL_SIZE,
        timeout=CONNECT_TIMEOUT_S, command_timeout=STATEMENT_TIMEOUT_S,
        server_settings={"application_name": APPLICATION_NAME})
    assert pool is not None
    redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=REDIS_CONNECTIONS_MAX, timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S))
    try:
        async with pool.acquire(timeout=POOL_ACQUIRE_TIMEOUT_S) as conn:
            await conn.execute(SCHEMA)
        server = grpc.aio.server(maximum_concurrent_rpcs=CONCURRENT_RPCS_MAX)
        pb_grpc.add_WalletServiceServicer_to_server(  # type: ignore[no-untyped-call]
            BaselineWallet(pool, redis, settings.token), server)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        port = server.add_insecure_port(settings.listen_addr)
        if port == 0:
            raise OSError(f"cannot listen on {settings.listen_addr}")
        await server.start()
        for name in ("", SERVICE_NAME):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("baseline wallet listening on port %d", port)
        await _stopped()
        await health.enter_graceful_shutdown()
        await server.stop(SHUTDOWN_GRACE_S)
    finally:
        await redis.aclose(close_connection_pool=True)
        await asyncio.wait_for(pool.close(), timeout=SHUTDOWN_GRACE_S + CONNECT_TIMEOUT_S)


async def _stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env(os.environ)
    uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
