"""WalletService over gRPC: every method goes through one path in `_call`.

That path authenticates the caller and checks the method's scope, gives the call a time
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
from grpc_status import rpc_status
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

from wallet_core.api import convert
from wallet_core.api.auth import AuthError, authenticate
from wallet_core.api.errors import rich_status, status_for
from wallet_core.config import Caller, Settings
from wallet_core.domain import validation as v
from wallet_core.domain.errors import InvalidField, WalletError
from wallet_core.domain.outcome import Outcome
from wallet_core.operations import Ledger
from wallet_core.reads import Reads

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
else:
    Context = grpc.aio.ServicerContext

log = logging.getLogger("wallet_core.access")
Response = TypeVar("Response")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


class WalletServicer(pb_grpc.WalletServiceServicer):
    def __init__(self, ledger: Ledger, reads: Reads, settings: Settings) -> None:
        self._ledger = ledger
        self._reads = reads
        self._callers = settings.callers_by_token_sha256
        self._timeout_s = settings.request_timeout_ms / 1000

    async def _call(self, method: str, context: Context,
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
            self._log(fields, code, started)
            await context.abort(code, str(exc))
        fields["caller"] = caller.name
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
        log.info("rpc", extra={**fields, "outcome": code.name,
                               "duration_ms": round((time.perf_counter() - started) * 1000, 3)})

    async def _execute(self, caller: Caller, command: object) -> Outcome:
        outcome = await self._ledger.execute(caller.name, command)  # type: ignore[arg-type]
        if outcome.rejection is not None:
            rejection = outcome.rejection
            rejection.metadata["replay"] = str(outcome.replay).lower()
            raise rejection
        return outcome

    # -- money-moving methods ----------------------------------------------------------------

    async def OpenWallet(self, request: pb.OpenWalletRequest,
                         context: Context) -> pb.OpenWalletResponse:
        async def work(caller: Caller) -> pb.OpenWalletResponse:
            o = await self._execute(caller, convert.open_wallet(request, self._ledger.currencies))
            return pb.OpenWalletResponse(result=convert.result(o), created=o.fields["created"])
        return await self._call("OpenWallet", context, work)

    async def Deposit(self, request: pb.DepositRequest,
                      context: Context) -> pb.DepositResponse:
        async def work(caller: Caller) -> pb.DepositResponse:
            o = await self._execute(caller, convert.deposit(request, self._ledger.currencies))
            return pb.DepositResponse(result=convert.result(o))
        return await self._call("Deposit", context, work)

    async def ReserveWithdrawal(self, request: pb.ReserveWithdrawalRequest,
                                context: Context) -> pb.ReserveWithdrawalResponse:
        async def work(caller: Caller) -> pb.ReserveWithdrawalResponse:
            o = await self._execute(caller, convert.reserve_withdrawal(request,
                                                                       self._ledger.currencies))
            return pb.ReserveWithdrawalResponse(result=convert.result(o),
                                                withdrawal_id=o.fields["withdrawal_id"])
        return await self._call("ReserveWithdrawal", context, work)

    async def CommitWithdrawal(self, request: pb.CommitWithdrawalRequest,
                               context: Context) -> pb.CommitWithdrawalResponse:
        async def work(caller: Caller) -> pb.CommitWithdrawalResponse:
            o = await self._execute(caller, convert.commit_withdrawal(request,
                                                                      self._ledger.currencies))
            return pb.CommitWithdrawalResponse(result=convert.result(o))
        return await self._call("CommitWithdrawal", context, work)

    async def CancelWithdrawal(self, request: pb.CancelWithdrawalRequest,
                               context: Context) -> pb.CancelWithdrawalResponse:
        async def work(caller: Caller) -> pb.CancelWithdrawalResponse:
            o = await self._execute(caller, convert.cancel_withdrawal(request,
                                                                      self._ledger.currencies))
            return pb.CancelWithdrawalResponse(result=convert.result(o))
        return await self._call("CancelWithdrawal", context, work)

    async def ReverseWithdrawal(self, request: pb.ReverseWithdrawalRequest,
                                context: Context) -> pb.ReverseWithdrawalResponse:
        async def work(caller: Caller) -> pb.ReverseWithdrawalResponse:
            o = await self._execute(caller, convert.reverse_withdrawal(request,
                                                                       self._ledger.currencies))
            return pb.ReverseWithdrawalResponse(result=convert.result(o))
        return await self._call("ReverseWithdrawal", context, work)

    async def Bet(self, request: pb.BetRequest,
                  context: Context) -> pb.BetResponse:
        async def work(caller: Caller) -> pb.BetResponse:
            o = await self._execute(caller, convert.bet(request, self._ledger.currencies))
            return pb.BetResponse(result=convert.result(o), cash_amount=o.fields["cash_minor"],
                                  bonus_amount=o.fields["bonus_minor"])
        return await self._call("Bet", context, work)

    async def Win(self, request: pb.WinRequest,
                  context: Context) -> pb.WinResponse:
        async def work(caller: Caller) -> pb.WinResponse:
            o = await self._execute(caller, convert.win(request, self._ledger.currencies))
            return pb.WinResponse(result=convert.result(o), cash_amount=o.fields["cash_minor"],
                                  bonus_amount=o.fields["bonus_minor"])
        return await self._call("Win", context, work)

    async def Rollback(self, request: pb.RollbackRequest,
                       context: Context) -> pb.RollbackResponse:
        async def work(caller: Caller) -> pb.RollbackResponse:
            o = await self._execute(caller, convert.rollback(request, self._ledger.currencies))
            return pb.RollbackResponse(result=convert.result(o),
                                       outcome=convert.rollback_outcome(o),
                                       cash_amount=o.fields["cash_minor"],
                                       bonus_amount=o.fields["bonus_minor"])
        return await self._call("Rollback", context, work)

    async def GrantBonus(self, request: pb.GrantBonusRequest,
                         context: Context) -> pb.GrantBonusResponse:
        async def work(caller: Caller) -> pb.GrantBonusResponse:
            o = await self._execute(caller, convert.grant_bonus(request, self._ledger.currencies))
            return pb.GrantBonusResponse(result=convert.result(o), bonus_id=o.fields["bonus_id"])
        return await self._call("GrantBonus", context, work)

    async def ForfeitBonus(self, request: pb.ForfeitBonusRequest,
                           context: Context) -> pb.ForfeitBonusResponse:
        async def work(caller: Caller) -> pb.ForfeitBonusResponse:
            o = await self._execute(caller, convert.forfeit_bonus(request,
                                                                  self._ledger.currencies))
            return pb.ForfeitBonusResponse(result=convert.result(o),
                                           forfeited_amount=o.fields["forfeited_minor"])
        return await self._call("ForfeitBonus", context, work)

    async def Chargeback(self, request: pb.ChargebackRequest,
                         context: Context) -> pb.ChargebackResponse:
        async def work(caller: Caller) -> pb.ChargebackResponse:
            o = await self._execute(caller, convert.chargeback(request, self._ledger.currencies))
            return pb.ChargebackResponse(result=convert.result(o))
        return await self._call("Chargeback", context, work)

    async def Adjust(self, request: pb.AdjustRequest,
                     context: Context) -> pb.AdjustResponse:
        async def work(caller: Caller) -> pb.AdjustResponse:
            o = await self._execute(caller, convert.adjust(request, self._ledger.currencies))
            return pb.AdjustResponse(result=convert.result(o))
        return await self._call("Adjust", context, work)

    # -- reads -------------------------------------------------------------------------------

    async def GetBalance(self, request: pb.GetBalanceRequest,
                         context: Context) -> pb.GetBalanceResponse:
        async def work(caller: Caller) -> pb.GetBalanceResponse:
            player, currency = convert.wallet(request, self._ledger.currencies)
            b = await self._reads.balance(player, currency.code)
            return pb.GetBalanceResponse(balances=convert.balances(currency.code, b))
        return await self._call("GetBalance", context, work)

    async def GetBonuses(self, request: pb.GetBonusesRequest,
                         context: Context) -> pb.GetBonusesResponse:
        async def work(caller: Caller) -> pb.GetBonusesResponse:
            player, currency = convert.wallet(request, self._ledger.currencies)
            found = await self._reads.bonuses(player, currency.code, request.include_inactive)
            return pb.GetBonusesResponse(bonuses=[convert.bonus(b) for b in found])
        return await self._call("GetBonuses", context, work)

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
        return await self._call("GetTransaction", context, work)

    async def ListTransactions(self, request: pb.ListTransactionsRequest,
                               context: Context) -> pb.ListTransactionsResponse:
        async def work(caller: Caller) -> pb.ListTransactionsResponse:
            player, currency = convert.wallet(request, self._ledger.currencies)
            views, token = await self._reads.transactions(player, currency.code,
                                                          request.page_size, request.page_token)
            return pb.ListTransactionsResponse(
                transactions=[convert.transaction(t) for t in views], next_page_token=token)
        return await self._call("ListTransactions", context, work)
