"""Test client helpers: stubs with per-scope tokens, unique keys, and status decoding."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import orjson
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

TOKENS = {
    "game": "test-game-token-0123456789",
    "bonus": "test-bonus-token-0123456789",
    "payments": "test-payments-token-0123456789",
    "support": "test-support-token-0123456789",
    "read": "test-read-token-0123456789",
    "limits": "test-limits-token-0123456789",
    "compliance": "test-compliance-token-0123456789",
}
SERVICES = {"game": "game-service", "bonus": "bonus-service", "payments": "payments-service",
            "support": "support", "read": "reporting", "limits": "account-service",
            "compliance": "compliance-service"}
# The bridge (payments-service) also sets the compliance restrictions its KYC results call
# for (docs/COMPLIANCE.md).
SCOPES_OF = {s: frozenset({s, "compliance"} if s == "payments" else {s}) for s in TOKENS}
CALLERS_JSON = orjson.dumps({SERVICES[s]: {"token": t, "scopes": sorted(SCOPES_OF[s])}
                             for s, t in TOKENS.items()}).decode()
_counter = itertools.count()


def key(prefix: str = "k") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}-{next(_counter)}"


def md(scope: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {TOKENS[scope]}")]


def future(days: int = 7) -> Any:
    ts = pb.GrantBonusRequest().expires_at
    ts.FromDatetime(datetime.now(UTC) + timedelta(days=days))
    return ts


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, f"no rich status on {err.code()}: {err.details()}"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo in status details")


class Client:
    """WalletService stub plus shortcuts that send the right scope's token."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = pb_grpc.WalletServiceStub(channel)

    async def call(self, method: str, request: Any, scope: str, deadline_s: float = 10) -> Any:
        return await getattr(self.stub, method)(request, metadata=md(scope), timeout=deadline_s)

    async def open(self, player: str, currency: str = "USD") -> pb.OpenWalletResponse:
        return await self.call("OpenWallet", pb.OpenWalletRequest(
            player_id=player, currency=currency, idempotency_key=key("open")), "payments")

    async def deposit(self, player: str, amount: int, currency: str = "USD",
                      idem: str | None = None) -> pb.DepositResponse:
        ref = idem or key("dep")
        return await self.call("Deposit", pb.DepositRequest(
            player_id=player, currency=currency, amount=amount, psp="stripe",
            psp_reference=f"pi_{ref}", idempotency_key=ref), "payments")

    async def funded(self, player: str, amount: int, currency: str = "USD") -> None:
        await self.open(player, currency)
        if amount:
            await self.deposit(player, amount, currency)

    async def bet(self, player: str, amount: int, idem: str | None = None, round_id: str = "r1",
                  game_id: str = "slots", currency: str = "USD") -> pb.BetResponse:
        return await self.call("Bet", pb.BetRequest(
            player_id=player, currency=currency, amount=amount, game_id=game_id,
            round_id=round_id, idempotency_key=idem or key("bet")), "game")

    async def win(self, player: str, amount: int, round_id: str = "r1", game_id: str = "slots",
                  idem: str | None = None) -> pb.WinResponse:
        return await self.call("Win", pb.WinRequest(
            player_id=player, currency="USD", amount=amount, game_id=game_id, round_id=round_id,
            idempotency_key=idem or key("win")), "game")

    async def rollback(self, player: str, bet_key: str, game_id: str = "slots",
                       idem: str | None = None) -> pb.RollbackResponse:
        return await self.call("Rollback", pb.RollbackRequest(
            player_id=player, currency="USD", game_id=game_id, bet_idempotency_key=bet_key,
            idempotency_key=idem or key("rb")), "game")

    async def grant(self, player: str, amount: int, wagering: int, days: int = 7,
                    idem: str | None = None) -> pb.GrantBonusResponse:
        return await self.call("GrantBonus", pb.GrantBonusRequest(
            player_id=player, currency="USD", amount=amount, wagering_requirement=wagering,
            expires_at=future(days), idempotency_key=idem or key("grant")), "bonus")

    async def balance(self, player: str, currency: str = "USD") -> pb.Balances:
        r = await self.call("GetBalance", pb.GetBalanceRequest(player_id=player,
                                                               currency=currency), "read")
        return r.balances


async def wait_for(predicate: Callable[[], Awaitable[Any]], timeout_s: float = 10.0) -> None:
    """Until `predicate()` is truthy, polled every 50 ms; TimeoutError after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not await predicate():
            await asyncio.sleep(0.05)


async def until_blocked_by(db: asyncpg.Connection, holder_pid: int) -> None:
    """Until some backend waits for a lock the backend `holder_pid` holds (a call under test
    has reached a row the test locked), at most 10 s. pg_locks is read live on every poll,
    even inside a transaction on `db`, so `db` may be the holder itself."""
    async def blocked() -> bool:
        return bool(await db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE NOT granted "
            "AND $1 = ANY(pg_blocking_pids(pid))", holder_pid))
    await wait_for(blocked)
