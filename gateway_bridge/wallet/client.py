"""The bridge's side of the wallet: wallet_client (the wallet's own client library) with
the bridge's token (payments scope) and deadline, and the values the bridge works with.

wallet_client does the transport: round_robin over the wallet's replicas, retries of calls
without an answer with the same request and so the same key, within the deadline. Its
errors come in the two kinds the bridge treats differently:

    WalletUnavailable  the call may or may not have happened (retries and deadline spent,
                       rate-limited, INTERNAL): retry later with the same key
    WalletRefused      the wallet answered with a definitive refusal (FAILED_PRECONDITION,
                       NOT_FOUND, INVALID_ARGUMENT, ...); `reason` is its stable reason string

Every money-moving call carries an idempotency key derived from the payment, so a retry after
WalletUnavailable is always safe.

This module alone knows the wallet's protobufs: callers pass and get plain values
(`Conversion`, `Balances`, JSON-shaped journal entries).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from wallet.v1 import wallet_service_pb2 as pb

import wallet_client

WalletUnavailable = wallet_client.WalletUnavailable
WalletRefused = wallet_client.Refused
# The wallet's reason for a key (or id) that names no journal entry.
TRANSACTION_NOT_FOUND = "TRANSACTION_NOT_FOUND"


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversion:
    """A deposit paid in another currency (docs/FX.md): what was paid, and the rate, spread
    and rate source it was credited at. The wallet checks the credit against it."""

    paid_currency: str
    paid_minor: int
    rate: str
    spread_bps: int
    rate_source: str
    rate_time: datetime


@dataclass(frozen=True, slots=True)
class Balances:
    """One wallet's buckets, in minor units of `currency`."""

    currency: str
    cash: int
    bonus: int
    reserved: int
    available: int


def _conversion(c: Conversion) -> pb.Conversion:
    rate_time = Timestamp()
    rate_time.FromDatetime(c.rate_time)
    return pb.Conversion(paid_currency=c.paid_currency, paid_amount=c.paid_minor, rate=c.rate,
                         spread_bps=c.spread_bps, rate_source=c.rate_source,
                         rate_time=rate_time)


@dataclass(frozen=True, slots=True)
class DepositRoom:
    """What the player's responsible-gambling limits leave for a deposit now
    (docs/COMPLIANCE.md): a break or the operator's restriction refuses any; otherwise the
    tightest deposit limit."""

    # "", "SELF_EXCLUDED", "TIMED_OUT", "UNDERAGE" or "COUNTRY_BLOCKED"
    blocked: str = ""
    blocked_until: str = ""  # ISO time, "permanent", or "lifted" (until the operator lifts it)
    remaining_minor: int | None = None  # None: no deposit limit
    limit: str = ""  # the tightest deposit limit, e.g. "deposit limit per week"


def deposit_room(limits: pb.Limits) -> DepositRoom:
    if limits.restriction:
        until = (limits.restricted_until.ToDatetime(tzinfo=UTC).isoformat()
                 if limits.HasField("restricted_until") else "lifted")
        return DepositRoom(blocked=limits.restriction, blocked_until=until)
    if limits.excluded_permanently:
        return DepositRoom(blocked="SELF_EXCLUDED", blocked_until="permanent")
    for reason, field_name in (("SELF_EXCLUDED", "excluded_until"),
                               ("TIMED_OUT", "timeout_until")):
        if limits.HasField(field_name):
            until = getattr(limits, field_name).ToDatetime(tzinfo=UTC)
            return DepositRoom(blocked=reason, blocked_until=until.isoformat())
    deposit = [lim for lim in limits.limits if lim.kind == pb.LIMIT_KIND_DEPOSIT]
    if not deposit:
        return DepositRoom()
    tightest = min(deposit, key=lambda lim: lim.remaining)
    period = pb.LimitPeriod.Name(tightest.period).removeprefix("LIMIT_PERIOD_").lower()
    return DepositRoom(remaining_minor=tightest.remaining,
                       limit=f"deposit limit per {period}")


class WalletClient:
    def __init__(self, *, addr: str, token: str, timeout_ms: int, tls_ca_file: str = "",
                 tls_cert_file: str = "", tls_key_file: str = "") -> None:
        credentials = None
        if tls_ca_file or tls_cert_file:
            # Small PEM files read once. No CA file: the wallet is verified against the
            # system roots; a client certificate answers a wallet that requires mutual TLS.
            def read(path: str) -> bytes | None:
                return Path(path).read_bytes() if path else None
            credentials = grpc.ssl_channel_credentials(
                root_certificates=read(tls_ca_file), private_key=read(tls_key_file),
                certificate_chain=read(tls_cert_file))
        self._client = wallet_client.AsyncWalletClient(addr, token=token, deadline_ms=timeout_ms,
                                                       credentials=credentials)

    async def close(self) -> None:
        await self._client.close()

    async def _call(self, method: str, request: object) -> object:
        return await self._client.call(method, request)

    async def open_wallet(self, *, player_id: str, currency: str) -> None:
        await self._client.open_wallet(player_id, currency,
                                       key=f"bridge:open:{player_id}:{currency}")

    async def restrict(self, *, player_id: str, currency: str, reason: str | None,
                       until: datetime | None, key: str) -> None:
        """The operator's restriction on the player's play (reason None lifts it); `until`:
        when it ends by itself."""
        await self._client.restrict(player_id, currency, reason=reason, key=key, until=until)

    async def deposit_room(self, *, player_id: str, currency: str) -> DepositRoom:
        """What the player's limits leave for deposits now; no wallet yet, no limits."""
        try:
            reply = await self._call("GetLimits", pb.GetLimitsRequest(player_id=player_id,
                                                                      currency=currency))
        except WalletRefused as err:
            if err.reason == "WALLET_NOT_FOUND":
                return DepositRoom()
            raise
        assert isinstance(reply, pb.GetLimitsResponse)
        return deposit_room(reply.limits)

    async def limits_view(self, *, player_id: str, currency: str) -> dict[str, Any]:
        """The wallet's responsible-gambling limits and breaks as the wallet's JSON mapping
        prints them (support views); empty when the player set nothing."""
        reply = await self._call("GetLimits", pb.GetLimitsRequest(player_id=player_id,
                                                                  currency=currency))
        assert isinstance(reply, pb.GetLimitsResponse)
        return MessageToDict(reply.limits)

    async def _balances(self, player_id: str, currency: str) -> pb.Balances:
        reply = await self._call("GetBalance", pb.GetBalanceRequest(player_id=player_id,
                                                                    currency=currency))
        assert isinstance(reply, pb.GetBalanceResponse)
        return reply.balances

    async def balances(self, *, player_id: str, currency: str) -> Balances:
        b = await self._client.get_balance(player_id, currency)
        return Balances(b.currency, b.cash_minor, b.bonus_minor, b.reserved_minor,
                        b.available_minor)

    async def balances_view(self, *, player_id: str, currency: str) -> dict[str, Any]:
        """The balances as the wallet's JSON mapping prints them (support views)."""
        return MessageToDict(await self._balances(player_id, currency),
                             always_print_fields_with_no_presence=True)

    async def deposit(self, *, player_id: str, currency: str, amount_minor: int, psp: str,
                      psp_reference: str, key: str,
                      conversion: Conversion | None = None) -> str:
        """`conversion`: the player paid in another currency (docs/FX.md); `amount_minor`
        is then the credit it is worth in `currency`, which the wallet checks."""
        done = await self._client.deposit(
            player_id, currency, amount_minor, psp=psp, psp_reference=psp_reference, key=key,
            conversion=None if conversion is None else _conversion(conversion))
        return done.transaction_id

    async def chargeback(self, *, player_id: str, currency: str, amount_minor: int, psp: str,
                         psp_reference: str, key: str) -> str:
        done = await self._client.chargeback(player_id, currency, amount_minor, psp=psp,
                                             psp_reference=psp_reference, key=key)
        return done.transaction_id

    async def reserve(self, *, player_id: str, currency: str, amount_minor: int, psp: str,
                      key: str) -> str:
        reserved = await self._client.reserve_withdrawal(player_id, currency, amount_minor,
                                                         psp=psp, key=key)
        return reserved.withdrawal_id

    async def commit(self, *, withdrawal_id: str, key: str) -> str:
        return (await self._client.commit_withdrawal(withdrawal_id, key=key)).transaction_id

    async def cancel(self, *, withdrawal_id: str, reason: str, key: str) -> str:
        done = await self._client.cancel_withdrawal(withdrawal_id, reason=reason, key=key)
        return done.transaction_id

    async def reverse(self, *, withdrawal_id: str, reason: str, key: str) -> str:
        done = await self._client.reverse_withdrawal(withdrawal_id, reason=reason, key=key)
        return done.transaction_id

    async def recorded(self, *, key: str) -> bool:
        """Whether the wallet holds an operation of ours under idempotency key `key`
        (GetTransaction by key; a recorded refusal counts). WalletRefused when the wallet
        can't tell us (e.g. this token may not read), WalletUnavailable when unreachable."""
        try:
            await self._client.get_transaction(key=key)
        except WalletRefused as err:
            if err.reason == TRANSACTION_NOT_FOUND:
                return False
            raise
        return True

    async def transaction_id(self, *, key: str, caller: str) -> str | None:
        """The wallet's journal id of what `caller` recorded under idempotency key `key`;
        None when nothing was (support's exports: the token needs the read scope)."""
        try:
            found = await self._client.get_transaction(key=key, caller=caller)
        except WalletRefused as err:
            if err.reason == TRANSACTION_NOT_FOUND:
                return None
            raise
        return found.transaction_id

    async def transactions_view(self, *, player_id: str, currency: str,
                                page_size: int) -> list[dict[str, Any]]:
        """The player's latest journal entries in one currency, newest first, as the
        wallet's JSON mapping prints them (support views)."""
        reply = await self._call("ListTransactions", pb.ListTransactionsRequest(
            player_id=player_id, currency=currency, page_size=page_size))
        assert isinstance(reply, pb.ListTransactionsResponse)
        return [MessageToDict(t) for t in reply.transactions]
