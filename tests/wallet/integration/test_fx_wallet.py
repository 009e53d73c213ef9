"""Converted deposits in the wallet over real gRPC (group commit on, as deployed) and in
ExecuteBatch: postings per currency through the FX desk, details recorded, replays, refusals
naming the field, and `wallet-core check` staying clean."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from wallet.v1 import wallet_service_pb2 as pb

from tests.helpers import Client, error_info, key
from wallet_core.storage import queries as q
from wallet_core.storage.checker import check_ledger

RATE_TIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def conversion(**overrides: Any) -> pb.Conversion:
    ts = Timestamp()
    ts.FromDatetime(RATE_TIME)
    values: dict[str, Any] = {"paid_currency": "BTC", "paid_amount": 150_000,
                              "rate": "60000", "spread_bps": 150, "rate_source": "psp-simulator",
                              "rate_time": ts}
    values.update(overrides)
    return pb.Conversion(**values)


def deposit_request(player: str, idem: str, *, amount: int = 8865,
                    **overrides: Any) -> pb.DepositRequest:
    """0.0015 BTC at 60000 EUR/BTC less 1.5 % = 88.65 EUR (tests/wallet/unit/test_fx_rounding.py)."""
    return pb.DepositRequest(player_id=player, currency="EUR", amount=amount, psp="nowpayments",
                             psp_reference=f"np-{idem}", idempotency_key=idem,
                             conversion=conversion(**overrides))


async def postings(db: asyncpg.Connection, transaction_id: str) -> set[tuple[str, str, int]]:
    rows = await db.fetch("SELECT account, currency, amount_minor FROM wallet.postings "
                          "WHERE journal_id = $1", int(transaction_id))
    return {(r["account"], r["currency"], r["amount_minor"]) for r in rows}


async def refused(client: Client, request: pb.DepositRequest) -> tuple[grpc.StatusCode, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await client.call("Deposit", request, "payments")
    return exc.value.code(), error_info(exc.value)


async def test_converted_deposit_posts_per_currency_and_records_the_rate(
        client: Client, db: asyncpg.Connection, player: str, ledger_clean: None) -> None:
    """BTC paid, EUR credited: psp:nowpayments -> fx:BTC in BTC, fx:EUR -> cash in EUR; each
    currency sums to zero; the rate, spread, source and time are in the details."""
    await client.open(player, "EUR")
    idem = key("fxdep")
    reply = await client.call("Deposit", deposit_request(player, idem), "payments")
    assert reply.result.balances.cash == 8865
    wid = await db.fetchval("SELECT id FROM wallet.wallets WHERE player_id = $1", player)
    assert await postings(db, reply.result.transaction_id) == {
        ("psp:nowpayments", "BTC", -150_000), ("fx:BTC", "BTC", 150_000),
        ("fx:EUR", "EUR", -8865), (f"player:{wid}:cash", "EUR", 8865)}

    tx = await client.call("GetTransaction", pb.GetTransactionRequest(
        transaction_id=reply.result.transaction_id), "support")
    assert tx.transaction.currency == "EUR"
    assert {(p.account, p.currency, p.amount) for p in tx.transaction.postings} == {
        ("psp:nowpayments", "BTC", -150_000), ("fx:BTC", "BTC", 150_000),
        ("fx:EUR", "EUR", -8865), (f"player:{wid}:cash", "EUR", 8865)}
    details = dict(tx.transaction.details)
    assert {k: details[k] for k in details if k.startswith("fx_")} == {
        "fx_paid_currency": "BTC", "fx_paid_minor": "150000", "fx_rate": "60000",
        "fx_spread_bps": "150", "fx_rate_source": "psp-simulator",
        "fx_rate_time": "2024-05-01T12:00:00Z"}


async def test_replay_and_key_reuse(client: Client, player: str, ledger_clean: None) -> None:
    """Same key + same conversion replays (same transaction); same key + another rate is
    IDEMPOTENCY_KEY_REUSED; a plain deposit's replay is unaffected by the new field."""
    await client.open(player, "EUR")
    idem = key("fxdep")
    first = await client.call("Deposit", deposit_request(player, idem), "payments")
    again = await client.call("Deposit", deposit_request(player, idem), "payments")
    assert again.result.replay and again.result.transaction_id == first.result.transaction_id
    code, info = await refused(client, deposit_request(player, idem, amount=8863,
                                                       rate="59993.23"))
    assert (code, info.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    code, info = await refused(client, deposit_request(player, idem, rate_source="other"))
    assert (code, info.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    plain = key("plain")
    await client.deposit(player, 500, "EUR", idem=plain)
    replay = await client.deposit(player, 500, "EUR", idem=plain)
    assert replay.result.replay
    assert (await client.balance(player, "EUR")).cash == 8865 + 500


@pytest.mark.parametrize(("overrides", "field", "reason"), [
    ({"amount": 8866}, "amount", "FIELD_INVALID"),
    ({"amount": 8864}, "amount", "FIELD_INVALID"),
    ({"rate": "0"}, "conversion.rate", "FIELD_INVALID"),
    ({"rate": "1e5"}, "conversion.rate", "FIELD_INVALID"),
    ({"rate": ""}, "conversion.rate", "FIELD_INVALID"),
    ({"spread_bps": 5001}, "conversion.spread_bps", "FIELD_INVALID"),
    ({"spread_bps": -1}, "conversion.spread_bps", "FIELD_INVALID"),
    ({"paid_currency": "XYZ"}, "conversion.paid_currency", "UNKNOWN_CURRENCY"),
    ({"paid_currency": "EUR"}, "conversion.paid_currency", "FIELD_INVALID"),
    ({"paid_amount": 0}, "conversion.paid_amount", "AMOUNT_NOT_POSITIVE"),
    ({"paid_amount": 1, "amount": 1}, "conversion.paid_amount", "AMOUNT_NOT_POSITIVE"),
    ({"rate_source": ""}, "conversion.rate_source", "FIELD_REQUIRED"),
    ({"rate_source": "bad source"}, "conversion.rate_source", "FIELD_INVALID"),
    ({"rate_time": None}, "conversion.rate_time", "FIELD_REQUIRED"),
])
async def test_bad_conversions_are_refused_naming_the_field(
        client: Client, player: str, overrides: dict[str, Any], field: str,
        reason: str) -> None:
    """Every bad conversion field is INVALID_ARGUMENT naming it; a credit that is not what
    the conversion is worth is refused; nothing is recorded."""
    await client.open(player, "EUR")
    amount = overrides.pop("amount", 8865)
    request = deposit_request(player, key("bad"), amount=amount, **overrides)
    if "rate_time" in overrides:
        request.conversion.ClearField("rate_time")
    code, info = await refused(client, request)
    assert (code, info.reason, info.metadata["field"]) == (
        grpc.StatusCode.INVALID_ARGUMENT, reason, field)
    assert (await client.balance(player, "EUR")).cash == 0


async def test_converted_deposit_inside_execute_batch(
        client: Client, db: asyncpg.Connection, player: str, ledger_clean: None) -> None:
    """A converted deposit in an atomic ExecuteBatch next to a plain one posts the same rows,
    and a mismatched one inside a batch is its own INVALID_ARGUMENT."""
    await client.open(player, "EUR")
    idem = key("fxbatch")
    reply = await client.call("ExecuteBatch", pb.ExecuteBatchRequest(atomic=True, operations=[
        pb.BatchOperation(deposit=deposit_request(player, idem)),
        pb.BatchOperation(deposit=pb.DepositRequest(
            player_id=player, currency="EUR", amount=100, psp="stripe",
            psp_reference=f"pi-{idem}", idempotency_key=idem + "-plain")),
    ]), "payments")
    assert [r.WhichOneof("outcome") for r in reply.results] == ["deposit", "deposit"]
    tid = reply.results[0].deposit.result.transaction_id
    assert ("fx:BTC", "BTC", 150_000) in await postings(db, tid)
    assert (await client.balance(player, "EUR")).cash == 8965
    bad = await client.call("ExecuteBatch", pb.ExecuteBatchRequest(operations=[
        pb.BatchOperation(deposit=deposit_request(player, key("fxbad"), amount=1)),
    ]), "payments")
    assert bad.results[0].error.reason == "FIELD_INVALID"
    assert bad.results[0].error.metadata["field"] == "amount"


async def test_checker_flags_a_conversion_that_does_not_match_its_record(
        db: asyncpg.Connection, client: Client, player: str) -> None:
    """`wallet-core check` refuses postings in a third currency and a paid amount that
    differs from the recorded one (the checker's own queries, on a tampered copy)."""
    await client.open(player, "EUR")
    reply = await client.call("Deposit", deposit_request(player, key("fxchk")), "payments")
    tid = int(reply.result.transaction_id)
    assert await check_ledger(db) == []
    tampering = db.transaction()
    await tampering.start()
    try:
        await db.execute("UPDATE wallet.journal SET details = details || "
                         "'{\"fx_paid_minor\": \"150001\"}' WHERE id = $1", tid)
        assert tid in [r["id"] for r in await db.fetch(q.CHECK_CONVERSIONS)]
        await db.execute("UPDATE wallet.journal SET details = details || "
                         "'{\"fx_paid_currency\": \"USDT\", \"fx_paid_minor\": \"150000\"}' "
                         "WHERE id = $1", tid)
        assert tid in [r["journal_id"] for r in await db.fetch(q.CHECK_POSTING_CURRENCY)]
    finally:
        await tampering.rollback()  # the rest of the suite checks the ledger too
    assert await check_ledger(db) == []


async def test_usdc_is_a_wallet_currency(client: Client, player: str) -> None:
    """Migration 0006 adds USDC (6 decimals): a USDT payment converts into a USDC wallet."""
    await client.open(player, "USDC")
    ts = Timestamp()
    ts.FromDatetime(RATE_TIME)
    reply = await client.call("Deposit", pb.DepositRequest(
        player_id=player, currency="USDC", amount=24_975_000, psp="nowpayments",
        psp_reference=f"np-{player}", idempotency_key=key("usdc"),
        conversion=pb.Conversion(paid_currency="USDT", paid_amount=25_000_000, rate="1",
                                 spread_bps=10, rate_source="sim", rate_time=ts)),
        "payments")
    assert reply.result.balances.cash == 24_975_000
