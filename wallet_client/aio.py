"""The asyncio client: one typed method per WalletService RPC, safe retries, typed errors.

    async with AsyncWalletClient("dns:///wallet.internal:50051", token=TOKEN) as wallet:
        keys = RoundKeys(caller="slots-eu-1", round_id=round_id)
        bet = await wallet.bet(player, "EUR", 100, game_id="slots", round_id=round_id,
                               key=keys.bet())

Every call runs within one overall deadline (`deadline_ms`, or `timeout_ms` per call). An
attempt that ends without an answer (retry.py says which) is sent again, the same request
with the same idempotency key, after a jittered backoff, while attempts and the deadline
last; then WalletUnavailable says the outcome is unknown. A refusal raises its exception
at once (errors.py).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

from wallet_client import errors, results
from wallet_client.retry import RetryPolicy, next_wait_ms

DEADLINE_MS_DEFAULT: Final = 5000
ATTEMPT_TIMEOUT_MS_DEFAULT: Final = 2000
# Wallet replies are small; this bounds what a misbehaving peer can make us buffer.
MESSAGE_SIZE_MAX_BYTES: Final = 4 * 1024 * 1024
R = TypeVar("R")
CHANNEL_OPTIONS: Final[tuple[tuple[str, Any], ...]] = (
    # Every address the target resolves to gets calls (a headless Service, several A
    # records, or `ipv4:h1:p1,h2:p2`); the wallet's connection age limit makes the channel
    # resolve again, so new replicas get their share.
    ("grpc.lb_policy_name", "round_robin"),
    # Find a dead connection (a replica gone without a FIN) before a call waits on it.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # This client retries itself (with the deadline and the jitter it needs); gRPC's own
    # retries on top would multiply the attempts.
    ("grpc.enable_retries", 0),
    ("grpc.max_receive_message_length", MESSAGE_SIZE_MAX_BYTES),
    ("grpc.max_send_message_length", MESSAGE_SIZE_MAX_BYTES),
)


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """Passed to `on_retry` before each retry, for the caller's logs and metrics."""

    method: str
    attempt: int  # the attempt that failed, 1-based
    code: str
    reason: str
    wait_ms: float


def _timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when.astimezone(UTC))
    return ts


class AsyncWalletClient:
    """A client of one wallet service (one channel). Create it, use it from one event loop,
    `await close()` it (or use `async with`)."""

    def __init__(self, target: str, *, token: str,
                 deadline_ms: int = DEADLINE_MS_DEFAULT,
                 attempt_timeout_ms: int = ATTEMPT_TIMEOUT_MS_DEFAULT,
                 retry: RetryPolicy | None = None,
                 credentials: grpc.ChannelCredentials | None = None,
                 options: Sequence[tuple[str, Any]] = (),
                 on_retry: Callable[[RetryEvent], None] | None = None,
                 rng: random.Random | None = None) -> None:
        if not token:
            raise ValueError("token is required")
        if deadline_ms <= 0 or attempt_timeout_ms <= 0:
            raise ValueError("deadline_ms and attempt_timeout_ms must be positive")
        self._target = target
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._deadline_ms = deadline_ms
        self._attempt_timeout_ms = attempt_timeout_ms
        self._retry = retry or RetryPolicy()
        self._credentials = credentials
        # Caller's options win over ours (grpc takes the last of a repeated key).
        self._options = (*CHANNEL_OPTIONS, *options)
        self._on_retry = on_retry
        self._rng = rng or random.Random()
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.WalletServiceStub | None = None

    async def __aenter__(self) -> AsyncWalletClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close(None)

    def _connect(self) -> pb_grpc.WalletServiceStub:
        if self._stub is None:
            if self._credentials is not None:
                self._channel = grpc.aio.secure_channel(self._target, self._credentials,
                                                        options=self._options)
            else:
                self._channel = grpc.aio.insecure_channel(self._target,
                                                          options=self._options)
            self._stub = pb_grpc.WalletServiceStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def call(self, method: str, request: Any, *, timeout_ms: int | None = None) -> Any:
        """Send `request` to RPC `method` with the retry loop; the reply message. The typed
        methods below use it; it is public for RPCs added after this client."""
        stub = self._connect()
        rpc: Callable[..., Awaitable[Any]] = getattr(stub, method)
        budget_ms = timeout_ms if timeout_ms is not None else self._deadline_ms
        deadline = time.monotonic() + budget_ms / 1000
        attempt = 0
        while True:
            attempt += 1
            remaining_s = deadline - time.monotonic()
            try:
                return await rpc(request, metadata=self._metadata,
                                 timeout=max(0.001, min(remaining_s,
                                                        self._attempt_timeout_ms / 1000)))
            except grpc.aio.AioRpcError as err:
                error = errors.from_rpc_error(err)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._stub is stub or (task is not None and task.cancelling()):
                    raise
                # close() cancelled the call, not our caller: the outcome is unknown.
                raise errors.WalletUnavailable(
                    "CANCELLED", "CANCELLED", "the client was closed during the call; retry "
                    "with the same idempotency key") from None
            wait_ms = next_wait_ms(self._retry, attempt=attempt, code=error.code,
                                   reason=error.reason, retry_after_ms=error.retry_after_ms,
                                   remaining_ms=(deadline - time.monotonic()) * 1000,
                                   rng=self._rng)
            if wait_ms is None:
                if type(error) is not errors.WalletUnavailable:
                    raise error
                # Retryable but out of attempts or time: whether it happened is unknown.
                raise errors.WalletUnavailable(
                    error.code, error.reason,
                    f"{error.message} (after {attempt} attempt(s); retry with the same "
                    "idempotency key)", error.metadata) from None
            if self._on_retry is not None:
                self._on_retry(RetryEvent(method, attempt, error.code, error.reason, wait_ms))
            await asyncio.sleep(wait_ms / 1000)
            if self._stub is not stub:
                # close() ran meanwhile: no more attempts on this client.
                raise errors.WalletUnavailable(
                    error.code, error.reason, f"{error.message} (the client was closed; "
                    "retry with the same idempotency key)", error.metadata)

    async def _money(self, method: str, request: Any, timeout_ms: int | None,
                     expected: type[R]) -> R:
        result = results.money_result(await self.call(method, request, timeout_ms=timeout_ms))
        assert isinstance(result, expected), f"{method} answered {type(result).__name__}"
        return result

    # -- wallets and balances -----------------------------------------------------------

    async def open_wallet(self, player_id: str, currency: str, *, key: str,
                          timeout_ms: int | None = None) -> results.OpenedWallet:
        return await self._money("OpenWallet", pb.OpenWalletRequest(
            player_id=player_id, currency=currency, idempotency_key=key),
            timeout_ms, results.OpenedWallet)

    async def get_balance(self, player_id: str, currency: str, *,
                          timeout_ms: int | None = None) -> results.Balances:
        reply = await self.call("GetBalance", pb.GetBalanceRequest(
            player_id=player_id, currency=currency), timeout_ms=timeout_ms)
        return results.Balances.of(reply.balances)

    # -- game rounds --------------------------------------------------------------------

    async def bet(self, player_id: str, currency: str, amount_minor: int, *, game_id: str,
                  round_id: str, key: str, timeout_ms: int | None = None) -> results.Staked:
        return await self._money("Bet", pb.BetRequest(
            player_id=player_id, currency=currency, amount=amount_minor, game_id=game_id,
            round_id=round_id, idempotency_key=key), timeout_ms, results.Staked)

    async def win(self, player_id: str, currency: str, amount_minor: int, *, game_id: str,
                  round_id: str, key: str, timeout_ms: int | None = None) -> results.Staked:
        return await self._money("Win", pb.WinRequest(
            player_id=player_id, currency=currency, amount=amount_minor, game_id=game_id,
            round_id=round_id, idempotency_key=key), timeout_ms, results.Staked)

    async def rollback(self, player_id: str, currency: str, *, game_id: str, bet_key: str,
                       key: str, timeout_ms: int | None = None) -> results.RolledBack:
        """Reverses the bet sent with idempotency key `bet_key`, whether or not it ever
        arrived (a late one is then refused)."""
        return await self._money("Rollback", pb.RollbackRequest(
            player_id=player_id, currency=currency, game_id=game_id,
            bet_idempotency_key=bet_key, idempotency_key=key), timeout_ms, results.RolledBack)

    # -- payments -----------------------------------------------------------------------

    async def deposit(self, player_id: str, currency: str, amount_minor: int, *, psp: str,
                      psp_reference: str, key: str, conversion: pb.Conversion | None = None,
                      timeout_ms: int | None = None) -> results.Operation:
        return await self._money("Deposit", pb.DepositRequest(
            player_id=player_id, currency=currency, amount=amount_minor, psp=psp,
            psp_reference=psp_reference, idempotency_key=key, conversion=conversion),
            timeout_ms, results.Operation)

    async def reserve_withdrawal(self, player_id: str, currency: str, amount_minor: int, *,
                                 psp: str, key: str,
                                 timeout_ms: int | None = None) -> results.Reserved:
        return await self._money("ReserveWithdrawal", pb.ReserveWithdrawalRequest(
            player_id=player_id, currency=currency, amount=amount_minor, psp=psp,
            idempotency_key=key), timeout_ms, results.Reserved)

    async def commit_withdrawal(self, withdrawal_id: str, *, key: str,
                                timeout_ms: int | None = None) -> results.Operation:
        return await self._money("CommitWithdrawal", pb.CommitWithdrawalRequest(
            withdrawal_id=withdrawal_id, idempotency_key=key), timeout_ms, results.Operation)

    async def cancel_withdrawal(self, withdrawal_id: str, *, reason: str, key: str,
                                timeout_ms: int | None = None) -> results.Operation:
        return await self._money("CancelWithdrawal", pb.CancelWithdrawalRequest(
            withdrawal_id=withdrawal_id, reason=reason, idempotency_key=key),
            timeout_ms, results.Operation)

    async def reverse_withdrawal(self, withdrawal_id: str, *, reason: str, key: str,
                                 timeout_ms: int | None = None) -> results.Operation:
        return await self._money("ReverseWithdrawal", pb.ReverseWithdrawalRequest(
            withdrawal_id=withdrawal_id, reason=reason, idempotency_key=key),
            timeout_ms, results.Operation)

    async def chargeback(self, player_id: str, currency: str, amount_minor: int, *, psp: str,
                         psp_reference: str, key: str,
                         timeout_ms: int | None = None) -> results.Operation:
        return await self._money("Chargeback", pb.ChargebackRequest(
            player_id=player_id, currency=currency, amount=amount_minor, psp=psp,
            psp_reference=psp_reference, idempotency_key=key), timeout_ms, results.Operation)

    # -- bonuses ------------------------------------------------------------------------

    async def grant_bonus(self, player_id: str, currency: str, amount_minor: int, *,
                          wagering_requirement_minor: int, expires_at: datetime, key: str,
                          timeout_ms: int | None = None) -> results.BonusGranted:
        return await self._money("GrantBonus", pb.GrantBonusRequest(
            player_id=player_id, currency=currency, amount=amount_minor,
            wagering_requirement=wagering_requirement_minor,
            expires_at=_timestamp(expires_at), idempotency_key=key),
            timeout_ms, results.BonusGranted)

    async def forfeit_bonus(self, bonus_id: str, *, key: str,
                            timeout_ms: int | None = None) -> results.BonusForfeited:
        return await self._money("ForfeitBonus", pb.ForfeitBonusRequest(
            bonus_id=bonus_id, idempotency_key=key), timeout_ms, results.BonusForfeited)

    async def get_bonuses(self, player_id: str, currency: str, *,
                          include_inactive: bool = False,
                          timeout_ms: int | None = None) -> tuple[results.Bonus, ...]:
        reply = await self.call("GetBonuses", pb.GetBonusesRequest(
            player_id=player_id, currency=currency, include_inactive=include_inactive),
            timeout_ms=timeout_ms)
        return tuple(results.Bonus.of(b) for b in reply.bonuses)

    # -- support and reads --------------------------------------------------------------

    async def adjust(self, player_id: str, currency: str, amount_minor: int, *, bucket: str,
                     reason: str, key: str,
                     timeout_ms: int | None = None) -> results.Operation:
        """A support correction of bucket "CASH" or "BONUS"; `amount_minor` is signed."""
        return await self._money("Adjust", pb.AdjustRequest(
            player_id=player_id, currency=currency, bucket=f"BUCKET_{bucket}",
            amount=amount_minor, reason=reason, idempotency_key=key), timeout_ms, results.Operation)

    async def get_transaction(self, *, transaction_id: str = "", key: str = "",
                              caller: str = "",
                              timeout_ms: int | None = None) -> results.Transaction:
        """One journal entry by id, or by the idempotency key `caller` (default: this
        client's service) sent it with."""
        if bool(transaction_id) == bool(key):
            raise ValueError("give exactly one of transaction_id and key")
        request = (pb.GetTransactionRequest(transaction_id=transaction_id, caller=caller)
                   if transaction_id else
                   pb.GetTransactionRequest(idempotency_key=key, caller=caller))
        reply = await self.call("GetTransaction", request, timeout_ms=timeout_ms)
        return results.Transaction.of(reply.transaction)

    async def list_transactions(self, player_id: str, currency: str, *, page_size: int = 50,
                                page_token: str = "",
                                timeout_ms: int | None = None) -> results.TransactionPage:
        reply = await self.call("ListTransactions", pb.ListTransactionsRequest(
            player_id=player_id, currency=currency, page_size=page_size,
            page_token=page_token), timeout_ms=timeout_ms)
        return results.TransactionPage(
            tuple(results.Transaction.of(t) for t in reply.transactions),
            reply.next_page_token)

    # -- responsible gambling and compliance --------------------------------------------

    async def set_limits(self, player_id: str, currency: str,
                         changes: Sequence[results.LimitChange], *, key: str,
                         time_zone: str = "",
                         timeout_ms: int | None = None) -> results.LimitsChanged:
        reply = await self.call("SetLimits", pb.SetLimitsRequest(
            player_id=player_id, currency=currency, changes=[c.message() for c in changes],
            time_zone=time_zone, idempotency_key=key), timeout_ms=timeout_ms)
        return results.LimitsChanged.of(reply)

    async def get_limits(self, player_id: str, currency: str, *,
                         timeout_ms: int | None = None) -> results.Limits:
        reply = await self.call("GetLimits", pb.GetLimitsRequest(
            player_id=player_id, currency=currency), timeout_ms=timeout_ms)
        return results.Limits.of(reply.limits)

    async def exclude(self, player_id: str, currency: str, *, kind: str, key: str,
                      duration_s: int = 0, permanent: bool = False,
                      timeout_ms: int | None = None) -> results.LimitsChanged:
        """A break of `kind` "TIMEOUT" or "SELF_EXCLUSION" for `duration_s` (or permanent)."""
        reply = await self.call("Exclude", pb.ExcludeRequest(
            player_id=player_id, currency=currency,
            kind=f"BREAK_KIND_{kind}", duration_s=duration_s,
            permanent=permanent, idempotency_key=key), timeout_ms=timeout_ms)
        return results.LimitsChanged.of(reply)

    async def restrict(self, player_id: str, currency: str, *, reason: str | None, key: str,
                       until: datetime | None = None,
                       timeout_ms: int | None = None) -> results.LimitsChanged:
        """The operator's restriction "UNDERAGE" or "COUNTRY_BLOCKED" (reason None lifts
        it); `until`: when it ends by itself."""
        request = pb.RestrictRequest(player_id=player_id, currency=currency,
                                     reason=reason or "", lift=reason is None,
                                     idempotency_key=key)
        if until is not None:
            request.until.CopyFrom(_timestamp(until))
        reply = await self.call("Restrict", request, timeout_ms=timeout_ms)
        return results.LimitsChanged.of(reply)

    # -- batches ------------------------------------------------------------------------

    async def execute_batch(self, operations: Sequence[pb.BatchOperation], *,
                            atomic: bool = False, timeout_ms: int | None = None,
                            ) -> list[results.MoneyResult | errors.WalletError]:
        """Up to 1000 operations, each with its own key; per operation its typed result, or
        the exception the single call would have raised (returned, not raised)."""
        reply = await self.call("ExecuteBatch", pb.ExecuteBatchRequest(
            operations=list(operations), atomic=atomic), timeout_ms=timeout_ms)
        out: list[results.MoneyResult | errors.WalletError] = []
        for item in reply.results:
            which = item.WhichOneof("outcome")
            if which == "error":
                e = item.error
                out.append(errors.error_for(e.code, e.reason, e.message, dict(e.metadata)))
            else:
                out.append(results.money_result(getattr(item, str(which))))
        return out
