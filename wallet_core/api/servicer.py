"""WalletService over gRPC: every method goes through one path in `_call`.

That path authenticates the caller and checks the method's scope, spends a token of the
caller's rate limit (refused calls do nothing), gives the call a time
budget (the client's deadline, capped by request_timeout_ms), runs the use case, maps domain
errors through the one error table, and writes one structured log line per call.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_status import rpc_status
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

from wallet_core import metrics
from wallet_core.api import convert, money_methods
from wallet_core.api.auth import METHOD_SCOPES, AuthError, authenticate
from wallet_core.api.errors import rich_status, status_for
from wallet_core.api.rate_limit import RATE_LIMITED, RateLimiter, rate_limited_status
from wallet_core.config import Caller, Settings
from wallet_core.domain import commands as cmd
from wallet_core.domain import errors
from wallet_core.domain import validation as v
from wallet_core.domain.errors import InvalidField, WalletError
from wallet_core.domain.outcome import Outcome
from wallet_core.operations import Operations
from wallet_core.reads import Reads

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
else:
    Context = grpc.aio.ServicerContext

log = logging.getLogger("wallet_core.access")
# The request is larger than WALLET_MESSAGE_SIZE_MAX_BYTES (up to the transport's own cap,
# server.TRANSPORT_SIZE_FACTOR times that, past which gRPC itself refuses it).
MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
Response = TypeVar("Response")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


class WalletServicer(pb_grpc.WalletServiceServicer):
    def __init__(self, operations: Operations, reads: Reads, settings: Settings) -> None:
        self._operations = operations
        self._reads = reads
        self._callers = settings.callers_by_token_sha256
        self._timeout_s = settings.request_timeout_ms / 1000
        self._batch_max = settings.batch_operations_max
        self._message_size_max_bytes = settings.message_size_max_bytes
        self._rate_limiter = RateLimiter(
            rate_rps=settings.rate_limit_rps, burst=settings.rate_limit_burst,
            callers={c.name for c in settings.callers_by_token_sha256.values()})

    async def _call(self, method: str, request: Message, context: Context,
                    work: Callable[[Caller], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        metadata = {k: v for k, v in (context.invocation_metadata() or ())
                    if isinstance(v, str)}
        given_id = metadata.get("x-request-id", "")
        request_id = given_id if _REQUEST_ID.fullmatch(given_id) else uuid.uuid4().hex
        fields: dict[str, object] = {"method": method, "request_id": request_id}
        try:
            caller = authenticate(metadata, self._callers, method)
        except AuthError as exc:
            code = (grpc.StatusCode.UNAUTHENTICATED if exc.unauthenticated
                    else grpc.StatusCode.PERMISSION_DENIED)
            fields["reason"] = exc.reason
            self._log(fields, code, started)
            await context.abort_with_status(  # type: ignore[attr-defined]
                rpc_status.to_status(rich_status(code, exc.message, exc.reason, exc.metadata)))
        fields["caller"] = caller.name
        size_bytes = request.ByteSize()
        if size_bytes > self._message_size_max_bytes:
            limit = str(self._message_size_max_bytes)
            fields.update(reason=MESSAGE_TOO_LARGE, size_bytes=size_bytes)
            self._log(fields, grpc.StatusCode.RESOURCE_EXHAUSTED, started)
            await context.abort_with_status(  # type: ignore[attr-defined]
                rpc_status.to_status(rich_status(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the request is {size_bytes} bytes; the limit is {limit}",
                    MESSAGE_TOO_LARGE, {"size_bytes": str(size_bytes), "limit_bytes": limit})))
        retry_after_ms = self._rate_limiter.retry_after_ms(caller.name)
        if retry_after_ms:
            fields.update(reason=RATE_LIMITED, retry_after_ms=retry_after_ms)
            self._log(fields, grpc.StatusCode.RESOURCE_EXHAUSTED, started)
            await context.abort_with_status(  # type: ignore[attr-defined]
                rpc_status.to_status(rate_limited_status(caller.name, retry_after_ms)))
        remaining = context.time_remaining()
        budget = min(self._timeout_s, remaining if remaining is not None else math.inf)
        try:
            async with asyncio.timeout(budget):
                response = await work(caller)
        except WalletError as exc:
            code = status_for(exc)
            fields["reason"] = exc.reason
            fields.update({k: v for k, v in exc.metadata.items() if k != "field"})
            self._log(fields, code, started)
            status = rich_status(code, exc.message, exc.reason, exc.metadata)
            await context.abort_with_status(  # type: ignore[attr-defined]
                rpc_status.to_status(status))
        except TimeoutError:
            self._log(fields, grpc.StatusCode.DEADLINE_EXCEEDED, started)
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                "deadline exceeded; the operation may or may not have been "
                                "applied: retry with the same idempotency key")
        except Exception:  # the edge: any bug becomes INTERNAL, its text stays in our logs
            log.exception("unexpected failure", extra=fields)
            self._log(fields, grpc.StatusCode.INTERNAL, started)
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"internal error (request id {request_id})")
        result = getattr(response, "result", None)
        if isinstance(result, pb.OperationResult):
            fields["transaction_id"] = result.transaction_id
            fields["replay"] = result.replay
        self._log(fields, grpc.StatusCode.OK, started)
        return response

    @staticmethod
    def _log(fields: dict[str, object], code: grpc.StatusCode, started: float) -> None:
        duration_s = time.perf_counter() - started
        metrics.rpc_answered(str(fields["method"]), code.name, duration_s,
                             replay=fields.get("replay") is True)
        log.info("rpc", extra={**fields, "outcome": code.name,
                               "duration_ms": round(duration_s * 1000, 3)})

    async def _execute(self, caller: Caller, command: object) -> Outcome:
        outcome = await self._operations.execute(caller.name, command)  # type: ignore[arg-type]
        if outcome.rejection is not None:
            # A fresh error per answer: the recorded one is shared by every replay of it (the
            # in-process tier keeps it), so it is never marked or raised itself.
            recorded = outcome.rejection
            raise errors.Rejected(recorded.message, reason=recorded.reason, metadata={
                **recorded.metadata, "replay": str(outcome.replay).lower()})
        return outcome

    # -- money-moving methods: one path, described in money_methods.METHODS -----------------

    async def _money(self, name: str, request: Any, context: Context) -> Any:
        method = money_methods.BY_NAME[name]

        async def work(caller: Caller) -> Any:
            command = method.command(request, self._operations.currencies)
            return method.response(await self._execute(caller, command))
        return await self._call(name, request, context, work)

    async def OpenWallet(self, request: pb.OpenWalletRequest,
                        context: Context) -> pb.OpenWalletResponse:
        return await self._money("OpenWallet", request, context)  # type: ignore[no-any-return]

    async def Deposit(self, request: pb.DepositRequest,
                     context: Context) -> pb.DepositResponse:
        return await self._money("Deposit", request, context)  # type: ignore[no-any-return]

    async def ReserveWithdrawal(self, request: pb.ReserveWithdrawalRequest,
                               context: Context) -> pb.ReserveWithdrawalResponse:
        return await self._money("ReserveWithdrawal", request, context)  # type: ignore[no-any-return]

    async def CommitWithdrawal(self, request: pb.CommitWithdrawalRequest,
                              context: Context) -> pb.CommitWithdrawalResponse:
        return await self._money("CommitWithdrawal", request, context)  # type: ignore[no-any-return]

    async def CancelWithdrawal(self, request: pb.CancelWithdrawalRequest,
                              context: Context) -> pb.CancelWithdrawalResponse:
        return await self._money("CancelWithdrawal", request, context)  # type: ignore[no-any-return]

    async def ReverseWithdrawal(self, request: pb.ReverseWithdrawalRequest,
                               context: Context) -> pb.ReverseWithdrawalResponse:
        return await self._money("ReverseWithdrawal", request, context)  # type: ignore[no-any-return]

    async def Bet(self, request: pb.BetRequest,
                 context: Context) -> pb.BetResponse:
        return await self._money("Bet", request, context)  # type: ignore[no-any-return]

    async def Win(self, request: pb.WinRequest,
                 context: Context) -> pb.WinResponse:
        return await self._money("Win", request, context)  # type: ignore[no-any-return]

    async def Rollback(self, request: pb.RollbackRequest,
                      context: Context) -> pb.RollbackResponse:
        return await self._money("Rollback", request, context)  # type: ignore[no-any-return]

    async def GrantBonus(self, request: pb.GrantBonusRequest,
                        context: Context) -> pb.GrantBonusResponse:
        return await self._money("GrantBonus", request, context)  # type: ignore[no-any-return]

    async def ForfeitBonus(self, request: pb.ForfeitBonusRequest,
                          context: Context) -> pb.ForfeitBonusResponse:
        return await self._money("ForfeitBonus", request, context)  # type: ignore[no-any-return]

    async def Chargeback(self, request: pb.ChargebackRequest,
                        context: Context) -> pb.ChargebackResponse:
        return await self._money("Chargeback", request, context)  # type: ignore[no-any-return]

    async def Adjust(self, request: pb.AdjustRequest,
                    context: Context) -> pb.AdjustResponse:
        return await self._money("Adjust", request, context)  # type: ignore[no-any-return]

    async def SetLimits(self, request: pb.SetLimitsRequest,
                        context: Context) -> pb.SetLimitsResponse:
        return await self._money("SetLimits", request, context)  # type: ignore[no-any-return]

    async def Exclude(self, request: pb.ExcludeRequest,
                      context: Context) -> pb.ExcludeResponse:
        return await self._money("Exclude", request, context)  # type: ignore[no-any-return]

    async def Restrict(self, request: pb.RestrictRequest,
                       context: Context) -> pb.RestrictResponse:
        return await self._money("Restrict", request, context)  # type: ignore[no-any-return]

    async def GetLimits(self, request: pb.GetLimitsRequest,
                        context: Context) -> pb.GetLimitsResponse:
        async def work(caller: Caller) -> pb.GetLimitsResponse:
            player, currency = convert.wallet(request, self._operations.currencies)
            guard = await self._reads.limits(player, currency.code, self._operations.clock())
            return pb.GetLimitsResponse(limits=convert.limits(guard.to_json()))
        return await self._call("GetLimits", request, context, work)

    async def ExecuteBatch(self, request: pb.ExecuteBatchRequest,
                           context: Context) -> pb.ExecuteBatchResponse:
        async def work(caller: Caller) -> pb.ExecuteBatchResponse:
            return await self._batch(caller, request)
        return await self._call("ExecuteBatch", request, context, work)

    async def _batch(self, caller: Caller,
                     request: pb.ExecuteBatchRequest) -> pb.ExecuteBatchResponse:
        count = len(request.operations)
        if not 1 <= count <= self._batch_max:
            raise InvalidField("operations", f"1 to {self._batch_max} operations per batch")
        results: list[pb.BatchResult | None] = [None] * count
        commands: list[tuple[int, money_methods.MoneyMethod, cmd.Command]] = []
        for i, operation in enumerate(request.operations):
            field = operation.WhichOneof("operation")
            method = money_methods.BY_FIELD.get(field or "")
            if method is None:
                results[i] = _batch_error(InvalidField(f"operations[{i}]",
                                                       "set exactly one operation"))
            elif not caller.scopes & METHOD_SCOPES[method.name]:
                results[i] = pb.BatchResult(error=pb.BatchError(
                    code="PERMISSION_DENIED", reason=errors.SCOPE_MISSING,
                    message=f"service {caller.name} may not call {method.name}"))
            else:
                try:
                    commands.append((i, method, method.command(getattr(operation, field),
                                                               self._operations.currencies)))
                except WalletError as exc:
                    results[i] = _batch_error(exc)
        if request.atomic and len(commands) < count:
            return _refused_atomic(results)
        outcomes = await self._operations.execute_many(
            caller.name, [c for _, _, c in commands], atomic=request.atomic)
        for (i, method, _), outcome in zip(commands, outcomes, strict=True):
            if isinstance(outcome, WalletError):
                results[i] = _batch_error(outcome)
            elif outcome.rejection is not None:
                outcome.rejection.metadata["replay"] = str(outcome.replay).lower()
                results[i] = _batch_error(outcome.rejection)
            else:
                result = pb.BatchResult()
                getattr(result, method.field).CopyFrom(method.response(outcome))
                results[i] = result
        answered = [r for r in results if r is not None]
        assert len(answered) == count, "every operation of a batch has an answer"
        return pb.ExecuteBatchResponse(results=answered)

    # -- reads -------------------------------------------------------------------------------

    async def GetBalance(self, request: pb.GetBalanceRequest,
                         context: Context) -> pb.GetBalanceResponse:
        async def work(caller: Caller) -> pb.GetBalanceResponse:
            player, currency = convert.wallet(request, self._operations.currencies)
            b = await self._reads.balance(player, currency.code)
            return pb.GetBalanceResponse(balances=convert.balances(currency.code, b))
        return await self._call("GetBalance", request, context, work)

    async def GetBonuses(self, request: pb.GetBonusesRequest,
                         context: Context) -> pb.GetBonusesResponse:
        async def work(caller: Caller) -> pb.GetBonusesResponse:
            player, currency = convert.wallet(request, self._operations.currencies)
            found = await self._reads.bonuses(player, currency.code, request.include_inactive)
            return pb.GetBonusesResponse(bonuses=[convert.bonus(b) for b in found])
        return await self._call("GetBonuses", request, context, work)

    async def GetTransaction(self, request: pb.GetTransactionRequest,
                             context: Context) -> pb.GetTransactionResponse:
        async def work(caller: Caller) -> pb.GetTransactionResponse:
            lookup = request.WhichOneof("lookup")
            if lookup == "transaction_id":
                view = await self._reads.transaction(
                    transaction_id=v.numeric_id(request.transaction_id, "transaction_id"))
            elif lookup == "idempotency_key":
                owner = (v.identifier(request.caller, "caller") if request.caller
                         else caller.name)
                view = await self._reads.transaction(
                    caller=owner, key=v.idempotency_key(request.idempotency_key))
            else:
                raise InvalidField("transaction_id", "set transaction_id or idempotency_key")
            return pb.GetTransactionResponse(transaction=convert.transaction(view))
        return await self._call("GetTransaction", request, context, work)

    async def ListTransactions(self, request: pb.ListTransactionsRequest,
                               context: Context) -> pb.ListTransactionsResponse:
        async def work(caller: Caller) -> pb.ListTransactionsResponse:
            player, currency = convert.wallet(request, self._operations.currencies)
            views, token = await self._reads.transactions(player, currency.code,
                                                          request.page_size, request.page_token)
            return pb.ListTransactionsResponse(
                transactions=[convert.transaction(t) for t in views], next_page_token=token)
        return await self._call("ListTransactions", request, context, work)


def _batch_error(exc: WalletError) -> pb.BatchResult:
    return pb.BatchResult(error=pb.BatchError(code=status_for(exc).name, reason=exc.reason,
                                              message=exc.message, metadata=exc.metadata))


def _refused_atomic(results: list[pb.BatchResult | None]) -> pb.ExecuteBatchResponse:
    """An atomic batch with an invalid operation runs none of them."""
    aborted = pb.BatchResult(error=pb.BatchError(
        code="ABORTED", reason=errors.BATCH_ROLLED_BACK,
        message="not applied: another operation of the atomic batch is invalid"))
    return pb.ExecuteBatchResponse(results=[r if r is not None else aborted for r in results])
