"""`python -m loadtests.statement_times`: what one Bet costs in Postgres round trips.

Starts the wallet in this process on one pooled connection (group commit on, one batch in
flight, or off with `--group-commit off`), funds a few players, then sends Bets one at a time
and records every statement the connection sends with asyncpg's query logger. Prints each
statement's count and mean round-trip time (client side: network, Postgres and the driver),
the figure docs/PERFORMANCE.md quotes for a batch of one. DATABASE_URL names a database
migrated with `wallet-core migrate`; REDIS_URL is used as given.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import time
import uuid

import grpc
import orjson
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

from wallet_core import config
from wallet_core.server import running

TOKEN = "statement-times-token-0123456789"
PLAYERS = 50
STATEMENTS_SHOWN = 12
CALL_TIMEOUT_S = 10.0


async def measure(bets: int, group_commit: bool) -> None:
    callers = orjson.dumps({"bench": {"token": TOKEN, "scopes": ["game", "payments"]}})
    settings = config.load({
        "DATABASE_URL": os.environ["DATABASE_URL"], "REDIS_URL": os.environ["REDIS_URL"],
        "WALLET_LISTEN_ADDR": "127.0.0.1:0", "WALLET_CALLERS": callers.decode(),
        "WALLET_DB_POOL_SIZE_MIN": "1", "WALLET_DB_POOL_SIZE_MAX": "1",
        "WALLET_GROUP_COMMIT_BATCHES_MAX": "1", "WALLET_LOG_LEVEL": "WARNING",
        "WALLET_GROUP_COMMIT": "true" if group_commit else "false"})
    md = [("authorization", f"Bearer {TOKEN}")]
    elapsed: dict[str, list[float]] = collections.defaultdict(list)
    async with running(settings) as run, \
            grpc.aio.insecure_channel(f"127.0.0.1:{run.port}") as channel:
        stub = pb_grpc.WalletServiceStub(channel)
        players = [f"st-{uuid.uuid4().hex[:10]}" for _ in range(PLAYERS)]
        for p in players:
            await stub.OpenWallet(pb.OpenWalletRequest(
                player_id=p, currency="USD", idempotency_key=f"open-{p}"),
                metadata=md, timeout=CALL_TIMEOUT_S)
            await stub.Deposit(pb.DepositRequest(
                player_id=p, currency="USD", amount=10**8, psp="stripe",
                psp_reference=f"pi-{p}", idempotency_key=f"dep-{p}"),
                metadata=md, timeout=CALL_TIMEOUT_S)
        async with run.pool.acquire() as conn:
            conn.add_query_logger(lambda q: elapsed[" ".join(q.query.split())[:70]].append(
                q.elapsed))
        started = time.perf_counter()
        for i in range(bets):
            await stub.Bet(pb.BetRequest(
                player_id=players[i % PLAYERS], currency="USD", amount=1, game_id="slots",
                round_id=f"r{i}", idempotency_key=f"bet-{uuid.uuid4().hex}"),
                metadata=md, timeout=CALL_TIMEOUT_S)
        took_s = time.perf_counter() - started
    print(f"{bets} Bets one at a time, group commit {'on' if group_commit else 'off'}: "
          f"{took_s / bets * 1000:.2f} ms each")
    print("| statements per Bet | mean round trip | statement |\n|---|---|---|")
    for query, times in sorted(elapsed.items(), key=lambda kv: -sum(kv[1]))[:STATEMENTS_SHOWN]:
        if len(times) >= bets:
            print(f"| {len(times) / bets:.0f} | {sum(times) / len(times) * 1e6:.0f} µs "
                  f"| `{query}` |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bets", type=int, default=400)
    parser.add_argument("--group-commit", choices=("on", "off"), default="on")
    args = parser.parse_args()
    asyncio.run(measure(args.bets, args.group_commit == "on"))


if __name__ == "__main__":
    main()
