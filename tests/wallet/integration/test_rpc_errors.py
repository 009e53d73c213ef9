"""Error surface of WalletService over real gRPC: auth, bad input, business errors, limits.

Table-driven: every method in METHOD_SCOPES is walked for authentication and scopes, every
field rule is checked for INVALID_ARGUMENT naming the field, and bad calls are shown to
change nothing in the ledger.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import orjson
import pytest
from google.protobuf import message as pb_message
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from wallet.v1 import wallet_service_pb2 as pb

from tests.helpers import SCOPES_OF, TOKENS, Client, error_info, future, key
from wallet_core.api.auth import METHOD_SCOPES
from wallet_core.server import Running

USD_MAX = 100_000_000_000
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
SERVICE = "wallet.v1.WalletService"
CLEAR = object()  # marker: ClearField on the request

# The scope each method is called with in the bad-input and business tables.
SCOPE_FOR = {
    "OpenWallet": "payments", "GetBalance": "read", "GetBonuses": "read",
    "Deposit": "payments", "ReserveWithdrawal": "payments", "CommitWithdrawal": "payments",
    "CancelWithdrawal": "payments", "ReverseWithdrawal": "payments", "Chargeback": "payments",
    "Bet": "game", "Win": "game",
    "Rollback": "game", "GrantBonus": "bonus", "ForfeitBonus": "bonus", "Adjust": "support",
    "GetTransaction": "support", "ListTransactions": "support", "ExecuteBatch": "game",
    "SetLimits": "limits", "GetLimits": "read", "Exclude": "limits", "Restrict": "compliance",
}


def past(days: int = 1) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(datetime.now(UTC) - timedelta(days=days))
    return ts


class Ctx:
    """Ids a valid-looking request refers to."""

    def __init__(self, player: str, withdrawal_id: str = "999999999001",
                 bonus_id: str = "999999999002", bet_key: str = "no-such-bet",
                 transaction_id: str = "999999999003") -> None:
        self.player = player
        self.withdrawal_id = withdrawal_id
        self.bonus_id = bonus_id
        self.bet_key = bet_key
        self.transaction_id = transaction_id


def base_request(method: str, c: Ctx) -> Any:
    """A valid-looking request for `method` (valid for a funded `c`)."""
    p, usd = c.player, "USD"
    build: dict[str, Callable[[], Any]] = {
        "OpenWallet": lambda: pb.OpenWalletRequest(player_id=p, currency=usd,
                                                   idempotency_key=key("open")),
        "GetBalance": lambda: pb.GetBalanceRequest(player_id=p, currency=usd),
        "GetBonuses": lambda: pb.GetBonusesRequest(player_id=p, currency=usd),
        "Deposit": lambda: pb.DepositRequest(player_id=p, currency=usd, amount=1_00,
                                             psp="stripe", psp_reference=key("pi"),
                                             idempotency_key=key("dep")),
        "ReserveWithdrawal": lambda: pb.ReserveWithdrawalRequest(
            player_id=p, currency=usd, amount=1_00, psp="stripe", idempotency_key=key("wd")),
        "CommitWithdrawal": lambda: pb.CommitWithdrawalRequest(
            withdrawal_id=c.withdrawal_id, idempotency_key=key("cw")),
        "CancelWithdrawal": lambda: pb.CancelWithdrawalRequest(
            withdrawal_id=c.withdrawal_id, reason="player asked", idempotency_key=key("xw")),
        "ReverseWithdrawal": lambda: pb.ReverseWithdrawalRequest(
            withdrawal_id=c.withdrawal_id, reason="payout.failed", idempotency_key=key("rw")),
        "Chargeback": lambda: pb.ChargebackRequest(player_id=p, currency=usd, amount=1_00,
                                                   psp="stripe", psp_reference=key("cb"),
                                                   idempotency_key=key("cb")),
        "Bet": lambda: pb.BetRequest(player_id=p, currency=usd, amount=1_00, game_id="slots",
                                     round_id="r1", idempotency_key=key("bet")),
        "ExecuteBatch": lambda: pb.ExecuteBatchRequest(operations=[pb.BatchOperation(
            bet=pb.BetRequest(player_id=p, currency=usd, amount=1_00, game_id="slots",
                              round_id="r1", idempotency_key=key("bb")))]),
        "Win": lambda: pb.WinRequest(player_id=p, currency=usd, amount=1_00, game_id="slots",
                                     round_id="r1", idempotency_key=key("win")),
        "Rollback": lambda: pb.RollbackRequest(player_id=p, currency=usd, game_id="slots",
                                               bet_idempotency_key=c.bet_key,
                                               idempotency_key=key("rb")),
        "GrantBonus": lambda: pb.GrantBonusRequest(player_id=p, currency=usd, amount=1_00,
                                                   wagering_requirement=10_00,
                                                   expires_at=future(), idempotency_key=key("g")),
        "ForfeitBonus": lambda: pb.ForfeitBonusRequest(bonus_id=c.bonus_id,
                                                       idempotency_key=key("ff")),
        "Adjust": lambda: pb.AdjustRequest(player_id=p, currency=usd, bucket=pb.BUCKET_CASH,
                                           amount=1_00, reason="goodwill",
                                           idempotency_key=key("adj")),
        "GetTransaction": lambda: pb.GetTransactionRequest(transaction_id=c.transaction_id),
        "ListTransactions": lambda: pb.ListTransactionsRequest(player_id=p, currency=usd,
                                                               page_size=10),
        "SetLimits": lambda: pb.SetLimitsRequest(
            player_id=p, currency=usd, idempotency_key=key("lim"), changes=[pb.LimitChange(
                kind=pb.LIMIT_KIND_LOSS, period=pb.LIMIT_PERIOD_MONTH, amount=1_000_000_00)]),
        "GetLimits": lambda: pb.GetLimitsRequest(player_id=p, currency=usd),
        "Exclude": lambda: pb.ExcludeRequest(player_id=p, currency=usd,
                                             kind=pb.BREAK_KIND_TIMEOUT, duration_s=86_400,
                                             idempotency_key=key("ex")),
        "Restrict": lambda: pb.RestrictRequest(player_id=p, currency=usd,
                                               reason="COUNTRY_BLOCKED",
                                               idempotency_key=key("re")),
    }
    return build[method]()


def mutate(req: Any, changes: dict[str, Any]) -> Any:
    for name, value in changes.items():
        if value is CLEAR:
            req.ClearField(name)
        elif isinstance(value, pb_message.Message):
            getattr(req, name).CopyFrom(value)
        else:
            setattr(req, name, value)
    return req


async def raw_call(client: Client, method: str, request: Any,
                   metadata: list[tuple[str, str]] | None) -> grpc.aio.AioRpcError | None:
    try:
        await getattr(client.stub, method)(request, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as err:
        return err
    return None


async def fails(client: Client, method: str, request: Any,
                scope: str | None = None) -> grpc.aio.AioRpcError:
    try:
        await client.call(method, request, scope or SCOPE_FOR[method])
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError(f"{method} succeeded but should have failed: {request}")


def all_error_text(err: grpc.aio.AioRpcError) -> str:
    """Everything the client sees of a failed call: details, debug string, trailers."""
    parts = [err.details() or "", err.debug_error_string() or ""]
    for item in err.trailing_metadata() or ():
        parts.append(repr(item))
    return "\n".join(parts)


async def wallet_snapshot(db: asyncpg.Connection, player: str) -> tuple[Any, ...]:
    w = await db.fetchrow("SELECT id, cash, bonus, reserved FROM wallet.wallets "
                          "WHERE player_id = $1 AND currency = 'USD'", player)
    if w is None:
        return (None,)
    journal = await db.fetchval("SELECT count(*) FROM wallet.journal WHERE wallet_id = $1",
                                w["id"])
    bonuses = await db.fetch("SELECT id, state, balance_minor, wagered_minor FROM "
                             "wallet.bonuses WHERE wallet_id = $1 ORDER BY id", w["id"])
    withdrawals = await db.fetch("SELECT id, state FROM wallet.withdrawals "
                                 "WHERE wallet_id = $1 ORDER BY id", w["id"])
    return (tuple(w), journal, [tuple(b) for b in bonuses], [tuple(x) for x in withdrawals])


async def ledger_snapshot(db: asyncpg.Connection, player: str) -> tuple[Any, ...]:
    journal = await db.fetchval("SELECT count(*) FROM wallet.journal")
    postings = await db.fetchval("SELECT count(*) FROM wallet.postings")
    return journal, postings, await wallet_snapshot(db, player)


async def quiet_bonus_sweeper(db: asyncpg.Connection) -> None:
    """Wait (briefly) until no active bonus falls due soon, so the sweeper writes nothing."""
    for _ in range(50):
        due = await db.fetchval("SELECT count(*) FROM wallet.bonuses WHERE state = 'active' "
                                "AND expires_at < now() + interval '60 seconds'")
        if due == 0:
            return
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def funded(client: Client) -> Ctx:
    """A USD wallet with cash, a reserved withdrawal, an active bonus and one bet."""
    player = f"rpcerr-{key('p')}"
    await client.funded(player, 1_000_00)
    w = await client.call("ReserveWithdrawal", pb.ReserveWithdrawalRequest(
        player_id=player, currency="USD", amount=10_00, psp="stripe",
        idempotency_key=key("wd")), "payments")
    g = await client.grant(player, 5_00, 50_00)
    bet_key = key("bet")
    b = await client.bet(player, 1_00, idem=bet_key)
    return Ctx(player, withdrawal_id=w.withdrawal_id, bonus_id=g.bonus_id, bet_key=bet_key,
               transaction_id=b.result.transaction_id)


# -- 1. authentication and scopes ------------------------------------------------------------

ALL_METHODS = sorted(METHOD_SCOPES)
NO_TOKEN_HEADERS = {
    "no-metadata": None,
    "empty-bearer": [("authorization", "Bearer ")],
    "basic-scheme": [("authorization", "Basic " + TOKENS["support"])],
    "token-without-scheme": [("authorization", TOKENS["support"])],
}
WRONG_TOKENS = {
    "unknown": "not-a-wallet-token-4711",
    "near-miss": TOKENS["support"] + "x",
    "truncated": TOKENS["payments"][:-1],
}


def test_method_scopes_cover_every_rpc() -> None:
    """METHOD_SCOPES names exactly the 22 RPCs of wallet.v1.WalletService."""
    rpcs = set(pb.DESCRIPTOR.services_by_name["WalletService"].methods_by_name)
    assert set(METHOD_SCOPES) == rpcs
    assert len(rpcs) == 22


@pytest.mark.parametrize("header", list(NO_TOKEN_HEADERS), ids=list(NO_TOKEN_HEADERS))
@pytest.mark.parametrize("method", ALL_METHODS)
async def test_no_token_is_unauthenticated(client: Client, player: str, method: str,
                                           header: str) -> None:
    """A call without a bearer token is UNAUTHENTICATED and echoes no token text."""
    err = await raw_call(client, method, base_request(method, Ctx(player)),
                         NO_TOKEN_HEADERS[header])
    assert err is not None, f"{method} succeeded without a token"
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (err.code(), err.details())
    info = error_info(err)
    assert (info.reason, info.domain, info.metadata["method"]) == ("TOKEN_MISSING", "wallet.v1",
                                                                   method)
    text = all_error_text(err)
    for token in TOKENS.values():
        assert token not in text


@pytest.mark.parametrize("wrong", list(WRONG_TOKENS), ids=list(WRONG_TOKENS))
@pytest.mark.parametrize("method", ALL_METHODS)
async def test_wrong_token_is_unauthenticated(client: Client, player: str, method: str,
                                              wrong: str) -> None:
    """An unknown bearer token is UNAUTHENTICATED and the token is not echoed."""
    token = WRONG_TOKENS[wrong]
    err = await raw_call(client, method, base_request(method, Ctx(player)),
                         [("authorization", f"Bearer {token}")])
    assert err is not None, f"{method} succeeded with a wrong token"
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (err.code(), err.details())
    info = error_info(err)
    assert (info.reason, info.metadata["method"]) == ("TOKEN_UNKNOWN", method)
    text = all_error_text(err)
    assert token not in text
    for real in TOKENS.values():
        assert real not in text


DENIED = [(m, s) for m in ALL_METHODS for s in sorted(TOKENS)
          if not SCOPES_OF[s] & METHOD_SCOPES[m]]
ALLOWED = [(m, s) for m in ALL_METHODS for s in sorted(TOKENS)
           if SCOPES_OF[s] & METHOD_SCOPES[m]]


@pytest.mark.parametrize(("method", "scope"), DENIED, ids=[f"{m}-{s}" for m, s in DENIED])
async def test_scope_not_allowed_is_permission_denied(client: Client, player: str, method: str,
                                                      scope: str) -> None:
    """A valid token whose scope may not call the method is PERMISSION_DENIED, token unechoed."""
    err = await raw_call(client, method, base_request(method, Ctx(player)),
                         [("authorization", f"Bearer {TOKENS[scope]}")])
    assert err is not None, f"{method} succeeded for scope {scope}"
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, (err.code(), err.details())
    info = error_info(err)
    assert (info.reason, info.metadata["method"]) == ("SCOPE_NOT_ALLOWED", method)
    assert info.metadata["scopes_allowed"] == ",".join(sorted(METHOD_SCOPES[method]))
    text = all_error_text(err)
    for token in TOKENS.values():
        assert token not in text


@pytest.mark.parametrize(("method", "scope"), ALLOWED, ids=[f"{m}-{s}" for m, s in ALLOWED])
async def test_allowed_scope_gets_past_auth(client: Client, player: str, method: str,
                                            scope: str, ledger_clean: None) -> None:
    """A token of an allowed scope passes authentication and the scope check."""
    err = await raw_call(client, method, base_request(method, Ctx(player)),
                         [("authorization", f"Bearer {TOKENS[scope]}")])
    if err is not None:
        assert err.code() not in (grpc.StatusCode.UNAUTHENTICATED,
                                  grpc.StatusCode.PERMISSION_DENIED), (err.code(), err.details())
        text = all_error_text(err)
        for token in TOKENS.values():
            assert token not in text


# -- 2. bad input ----------------------------------------------------------------------------

KEYED = ["OpenWallet", "Deposit", "ReserveWithdrawal", "CommitWithdrawal", "CancelWithdrawal",
         "ReverseWithdrawal", "Chargeback", "Bet", "Win", "Rollback", "GrantBonus",
         "ForfeitBonus", "Adjust", "SetLimits", "Exclude", "Restrict"]
WITH_PLAYER = ["OpenWallet", "GetBalance", "GetBonuses", "Deposit", "ReserveWithdrawal",
               "Chargeback", "Bet", "Win", "Rollback", "GrantBonus", "Adjust",
               "ListTransactions", "SetLimits", "GetLimits", "Exclude", "Restrict"]
POSITIVE_AMOUNT = ["Deposit", "ReserveWithdrawal", "Chargeback", "Bet", "Win", "GrantBonus"]
REQUIRED_TEXT = {
    "Deposit": ["psp", "psp_reference"], "ReserveWithdrawal": ["psp"],
    "Chargeback": ["psp", "psp_reference"], "Bet": ["game_id", "round_id"],
    "Win": ["game_id", "round_id"], "Rollback": ["game_id", "bet_idempotency_key"],
    "CommitWithdrawal": ["withdrawal_id"], "CancelWithdrawal": ["withdrawal_id", "reason"],
    "ReverseWithdrawal": ["withdrawal_id", "reason"],
    "ForfeitBonus": ["bonus_id"], "Adjust": ["reason"],
}
REQ, INV = "FIELD_REQUIRED", "FIELD_INVALID"

BAD_KEYS = {
    "empty": ("", REQ),
    "129-chars": ("k" * 129, INV),
    "10kB": ("k" * 10_000, INV),
    "nul": ("key\x00x", INV),
    "newline": ("key\nx", INV),
    "tab": ("key\tx", INV),
    "del": ("key\x7fx", INV),
    "leading-space": (" key", INV),
    "trailing-space": ("key ", INV),
    "non-ascii": ("kéy", INV),
}
BAD_PLAYERS = {
    "empty": ("", REQ),
    "control": ("p\x01x", INV),
    "newline": ("p\nx", INV),
    "nul": ("p\x00x", INV),
    "umlaut": ("pläyer", INV),
    "zero-width-space": ("p\u200bx", INV),
    "rtl-override": ("p\u202ex", INV),
    "fullwidth": ("ｐｌａｙｅｒ", INV),
    "emoji": ("p\U0001f600", INV),
    "65-chars": ("p" * 65, INV),
    "leading-dash": ("-player", INV),
    "space": ("pl ayer", INV),
}
BAD_IDS = {"letters": "abc", "mixed": "12a", "negative": "-1", "zero": "0",
           "leading-zero": "01", "above-int64": "9223372036854775808",
           "20-digits": "99999999999999999999", "space": " 12", "float": "1.5"}

Case = tuple[str, dict[str, Any], str, set[str] | None]
CASES: list[Any] = []


def case(id_: str, method: str, changes: dict[str, Any], field: str,
         reason: str | set[str] | None) -> None:
    reasons = {reason} if isinstance(reason, str) else reason
    CASES.append(pytest.param(method, changes, field, reasons, id=f"{method}-{id_}"))


for _m in KEYED:
    for _n, (_v, _r) in BAD_KEYS.items():
        case(f"key-{_n}", _m, {"idempotency_key": _v}, "idempotency_key", _r)
for _m in WITH_PLAYER:
    for _n, (_v, _r) in BAD_PLAYERS.items():
        case(f"player-{_n}", _m, {"player_id": _v}, "player_id", _r)
    case("currency-empty", _m, {"currency": ""}, "currency", REQ)
    case("currency-XXX", _m, {"currency": "XXX"}, "currency", "UNKNOWN_CURRENCY")
    case("currency-lowercase", _m, {"currency": "usd"}, "currency", "UNKNOWN_CURRENCY")
    case("currency-control", _m, {"currency": "U\nSD"}, "currency", "UNKNOWN_CURRENCY")
for _m in POSITIVE_AMOUNT:
    case("amount-zero", _m, {"amount": 0}, "amount", "AMOUNT_NOT_POSITIVE")
    case("amount-negative", _m, {"amount": -1}, "amount", "AMOUNT_NOT_POSITIVE")
    case("amount-int64-min", _m, {"amount": INT64_MIN}, "amount", "AMOUNT_NOT_POSITIVE")
    case("amount-above-max", _m, {"amount": USD_MAX + 1}, "amount", "AMOUNT_ABOVE_MAXIMUM")
    case("amount-int64-max", _m, {"amount": INT64_MAX}, "amount", "AMOUNT_ABOVE_MAXIMUM")
for _m, _fields in REQUIRED_TEXT.items():
    for _f in _fields:
        case(f"{_f}-empty", _m, {_f: ""}, _f, REQ)
for _m, _f in (("CommitWithdrawal", "withdrawal_id"), ("CancelWithdrawal", "withdrawal_id"),
               ("ReverseWithdrawal", "withdrawal_id"), ("ForfeitBonus", "bonus_id")):
    for _n, _v in BAD_IDS.items():
        case(f"{_f}-{_n}", _m, {_f: _v}, _f, INV)
for _m, _f in (("Bet", "game_id"), ("Bet", "round_id"), ("Win", "game_id"),
               ("Rollback", "game_id"), ("Deposit", "psp"), ("Deposit", "psp_reference"),
               ("Chargeback", "psp_reference"), ("ReserveWithdrawal", "psp")):
    case(f"{_f}-control", _m, {_f: "x\x00y"}, _f, INV)
    case(f"{_f}-65-chars", _m, {_f: "x" * 65}, _f, INV)
for _n, (_v, _r) in BAD_KEYS.items():
    case(f"bet-key-{_n}", "Rollback", {"bet_idempotency_key": _v}, "bet_idempotency_key", _r)
# Adjust
case("bucket-unspecified", "Adjust", {"bucket": pb.BUCKET_UNSPECIFIED}, "bucket", INV)
case("bucket-unknown-enum", "Adjust", {"bucket": 7}, "bucket", INV)
case("amount-zero", "Adjust", {"amount": 0}, "amount", "AMOUNT_NOT_POSITIVE")
case("amount-above-max", "Adjust", {"amount": USD_MAX + 1}, "amount", "AMOUNT_ABOVE_MAXIMUM")
case("amount-below-minus-max", "Adjust", {"amount": -(USD_MAX + 1)}, "amount",
     "AMOUNT_ABOVE_MAXIMUM")
case("amount-int64-min", "Adjust", {"amount": INT64_MIN}, "amount", "AMOUNT_ABOVE_MAXIMUM")
case("reason-control", "Adjust", {"reason": "fix\x00it"}, "reason", INV)
case("reason-257-chars", "Adjust", {"reason": "r" * 257}, "reason", INV)
# CancelWithdrawal, ReverseWithdrawal
for _m in ("CancelWithdrawal", "ReverseWithdrawal"):
    case("reason-missing", _m, {"reason": CLEAR}, "reason", REQ)
    case("reason-control", _m, {"reason": "bye\x1b[31m"}, "reason", INV)
    case("reason-257-chars", _m, {"reason": "r" * 257}, "reason", INV)
# GrantBonus
case("expires-missing", "GrantBonus", {"expires_at": CLEAR}, "expires_at", {REQ, INV})
case("expires-past", "GrantBonus", {"expires_at": past()}, "expires_at", None)
case("expires-now-ish", "GrantBonus", {"expires_at": past(0)}, "expires_at", None)
case("wagering-negative", "GrantBonus", {"wagering_requirement": -1}, "wagering_requirement",
     INV)
case("wagering-above-max", "GrantBonus", {"wagering_requirement": USD_MAX + 1},
     "wagering_requirement", "AMOUNT_ABOVE_MAXIMUM")
# ListTransactions
case("page-size-501", "ListTransactions", {"page_size": 501}, "page_size", INV)
case("page-size-negative", "ListTransactions", {"page_size": -1}, "page_size", INV)


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(obj)).decode()


for _n, _v in {"garbage": "garbage!!", "percent": "%%%", "unicode": "ü",
               "json-object": _b64({"a": 1}), "json-number": _b64(123),
               "json-one": _b64([1]), "other-wallet": _b64([-5, 10]),
               "string-ids": _b64(["a", "b"])}.items():
    case(f"page-token-{_n}", "ListTransactions", {"page_token": _v}, "page_token", INV)
# GetTransaction
case("neither-id-nor-key", "GetTransaction", {"transaction_id": CLEAR}, "transaction_id", None)
case("id-empty", "GetTransaction", {"transaction_id": ""}, "transaction_id", REQ)
for _n, _v in BAD_IDS.items():
    case(f"id-{_n}", "GetTransaction", {"transaction_id": _v}, "transaction_id", INV)
for _n, (_v, _r) in BAD_KEYS.items():
    case(f"key-{_n}", "GetTransaction", {"idempotency_key": _v}, "idempotency_key", _r)
case("caller-control", "GetTransaction", {"idempotency_key": "k1", "caller": "svc\nx"},
     "caller", INV)
case("caller-65-chars", "GetTransaction", {"idempotency_key": "k1", "caller": "s" * 65},
     "caller", INV)


def check_invalid(err: grpc.aio.AioRpcError, field: str, reasons: set[str] | None) -> None:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    info = error_info(err)
    assert info.domain == "wallet.v1"
    assert info.metadata["field"] == field, (dict(info.metadata), err.details())
    assert field in (err.details() or ""), err.details()
    if reasons is not None:
        assert info.reason in reasons, (info.reason, err.details())


@pytest.mark.parametrize(("method", "changes", "field", "reasons"), CASES)
async def test_bad_input_is_invalid_argument(client: Client, db: asyncpg.Connection,
                                             funded: Ctx, method: str, changes: dict[str, Any],
                                             field: str, reasons: set[str] | None,
                                             ledger_clean: None) -> None:
    """A malformed field gives INVALID_ARGUMENT naming that field and changes the wallet not."""
    before = await wallet_snapshot(db, funded.player)
    err = await fails(client, method, mutate(base_request(method, funded), changes))
    check_invalid(err, field, reasons)
    assert await wallet_snapshot(db, funded.player) == before


async def test_getting_the_transaction_neither_by_id_nor_key_names_both(
        client: Client) -> None:
    """GetTransaction with an empty lookup tells the caller to set transaction_id or key."""
    err = await fails(client, "GetTransaction", pb.GetTransactionRequest())
    check_invalid(err, "transaction_id", None)
    assert "idempotency_key" in (err.details() or "")


async def test_batch_of_bad_calls_changes_nothing(client: Client, db: asyncpg.Connection,
                                                  funded: Ctx, ledger_clean: None) -> None:
    """Every bad-input call in one batch leaves journal, postings and the balance as they were."""
    await quiet_bonus_sweeper(db)
    balance_before = await client.balance(funded.player)
    before = await ledger_snapshot(db, funded.player)
    for p in CASES:
        method, changes, field, reasons = p.values
        err = await fails(client, method, mutate(base_request(method, funded), changes))
        check_invalid(err, field, reasons)
    assert await ledger_snapshot(db, funded.player) == before
    assert await client.balance(funded.player) == balance_before


# -- 3. business errors ----------------------------------------------------------------------

NO_WALLET_METHODS = ["Bet", "Win", "Rollback", "Deposit", "ReserveWithdrawal", "Chargeback",
                     "GrantBonus", "Adjust", "GetBalance", "GetBonuses", "ListTransactions",
                     "SetLimits", "GetLimits", "Exclude", "Restrict"]


@pytest.mark.parametrize("method", NO_WALLET_METHODS)
async def test_no_wallet_is_wallet_not_found(client: Client, db: asyncpg.Connection,
                                             player: str, method: str,
                                             ledger_clean: None) -> None:
    """A call on a player without a wallet is NOT_FOUND / WALLET_NOT_FOUND and opens nothing."""
    journal_before = await db.fetchval("SELECT count(*) FROM wallet.journal")
    err = await fails(client, method, base_request(method, Ctx(player)))
    assert err.code() == grpc.StatusCode.NOT_FOUND, (err.code(), err.details())
    assert error_info(err).reason == "WALLET_NOT_FOUND"
    assert await wallet_snapshot(db, player) == (None,)
    await quiet_bonus_sweeper(db)
    assert await db.fetchval("SELECT count(*) FROM wallet.journal") == journal_before


UNKNOWN_IDS = [
    ("CommitWithdrawal", pb.CommitWithdrawalRequest(withdrawal_id="987654321987",
                                                    idempotency_key=key("unk")),
     "WITHDRAWAL_NOT_FOUND"),
    ("CancelWithdrawal", pb.CancelWithdrawalRequest(withdrawal_id="987654321987", reason="x",
                                                    idempotency_key=key("unk")),
     "WITHDRAWAL_NOT_FOUND"),
    ("ReverseWithdrawal", pb.ReverseWithdrawalRequest(withdrawal_id="987654321987", reason="x",
                                                      idempotency_key=key("unk")),
     "WITHDRAWAL_NOT_FOUND"),
    ("ForfeitBonus", pb.ForfeitBonusRequest(bonus_id="987654321987",
                                            idempotency_key=key("unk")),
     "BONUS_NOT_FOUND"),
    ("GetTransaction", pb.GetTransactionRequest(transaction_id="987654321987"),
     "TRANSACTION_NOT_FOUND"),
    ("GetTransaction", pb.GetTransactionRequest(idempotency_key="never-sent-key-42"),
     "TRANSACTION_NOT_FOUND"),
    ("GetTransaction", pb.GetTransactionRequest(idempotency_key="never-sent-key-42",
                                                caller="game-service"),
     "TRANSACTION_NOT_FOUND"),
]


@pytest.mark.parametrize(("method", "request_", "reason"), UNKNOWN_IDS,
                         ids=[f"{m}-{r}-{i}" for i, (m, _, r) in enumerate(UNKNOWN_IDS)])
async def test_unknown_ids_are_not_found(client: Client, method: str, request_: Any,
                                         reason: str, ledger_clean: None) -> None:
    """An id the wallet never issued is NOT_FOUND with the matching reason."""
    err = await fails(client, method, request_)
    assert err.code() == grpc.StatusCode.NOT_FOUND, (err.code(), err.details())
    assert error_info(err).reason == reason


async def test_bet_above_funds_is_rejected_and_replayed(client: Client, db: asyncpg.Connection,
                                                        player: str, ledger_clean: None) -> None:
    """A bet above funds is INSUFFICIENT_FUNDS; its replay repeats it with replay=true."""
    await client.funded(player, 10_00)
    before = await wallet_snapshot(db, player)
    bet_key = key("bet")
    err = await fails(client, "Bet", pb.BetRequest(
        player_id=player, currency="USD", amount=20_00, game_id="slots", round_id="r1",
        idempotency_key=bet_key))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, (err.code(), err.details())
    first = error_info(err)
    assert first.reason == "INSUFFICIENT_FUNDS"
    assert first.metadata["replay"] == "false"
    assert first.metadata["transaction_id"]
    err2 = await fails(client, "Bet", pb.BetRequest(
        player_id=player, currency="USD", amount=20_00, game_id="slots", round_id="r1",
        idempotency_key=bet_key))
    assert err2.code() == grpc.StatusCode.FAILED_PRECONDITION, (err2.code(), err2.details())
    again = error_info(err2)
    assert again.reason == "INSUFFICIENT_FUNDS"
    assert again.metadata["replay"] == "true"
    assert again.metadata["transaction_id"] == first.metadata["transaction_id"]
    after = await wallet_snapshot(db, player)
    assert after[0] == before[0]  # balances untouched
    assert after[1] == before[1] + 1  # one recorded rejection, not two
    b = await client.balance(player)
    assert (b.cash, b.bonus, b.reserved) == (10_00, 0, 0)


async def test_same_key_different_request_is_key_reused(client: Client, db: asyncpg.Connection,
                                                        player: str, ledger_clean: None) -> None:
    """The same key with another amount is ALREADY_EXISTS / IDEMPOTENCY_KEY_REUSED, no change."""
    await client.funded(player, 100_00)
    bet_key = key("bet")
    await client.bet(player, 5_00, idem=bet_key)
    await quiet_bonus_sweeper(db)
    before = await ledger_snapshot(db, player)
    err = await fails(client, "Bet", pb.BetRequest(
        player_id=player, currency="USD", amount=6_00, game_id="slots", round_id="r1",
        idempotency_key=bet_key))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, (err.code(), err.details())
    assert error_info(err).reason == "IDEMPOTENCY_KEY_REUSED"
    assert await ledger_snapshot(db, player) == before
    assert (await client.balance(player)).cash == 95_00


async def test_duplicate_psp_reference_is_refused(client: Client, db: asyncpg.Connection,
                                                  player: str, ledger_clean: None) -> None:
    """A second deposit of one psp+psp_reference under a new key is DUPLICATE_PSP_REFERENCE."""
    await client.open(player)
    ref = f"pi_{key('ref')}"
    await client.call("Deposit", pb.DepositRequest(
        player_id=player, currency="USD", amount=50_00, psp="stripe", psp_reference=ref,
        idempotency_key=key("dep")), "payments")
    await quiet_bonus_sweeper(db)
    before = await ledger_snapshot(db, player)
    err = await fails(client, "Deposit", pb.DepositRequest(
        player_id=player, currency="USD", amount=50_00, psp="stripe", psp_reference=ref,
        idempotency_key=key("dep")))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, (err.code(), err.details())
    assert error_info(err).reason == "DUPLICATE_PSP_REFERENCE"
    assert await ledger_snapshot(db, player) == before
    assert (await client.balance(player)).cash == 50_00


async def test_rollback_of_another_players_bet_names_bet_key(
        client: Client, db: asyncpg.Connection, player: str, ledger_clean: None) -> None:
    """A rollback naming another player's bet is INVALID_ARGUMENT on bet_idempotency_key."""
    other = f"{player}-b"
    await client.funded(player, 100_00)
    await client.funded(other, 100_00)
    bet_key = key("bet")
    await client.bet(player, 10_00, idem=bet_key)
    before = (await wallet_snapshot(db, player), await wallet_snapshot(db, other))
    err = await fails(client, "Rollback", pb.RollbackRequest(
        player_id=other, currency="USD", game_id="slots", bet_idempotency_key=bet_key,
        idempotency_key=key("rb")))
    check_invalid(err, "bet_idempotency_key", None)
    assert (await wallet_snapshot(db, player), await wallet_snapshot(db, other)) == before
    assert (await client.balance(player)).cash == 90_00


async def test_rollback_with_other_game_names_game_id(client: Client, db: asyncpg.Connection,
                                                      player: str, ledger_clean: None) -> None:
    """A rollback whose game_id differs from the bet's is INVALID_ARGUMENT on game_id."""
    await client.funded(player, 100_00)
    bet_key = key("bet")
    await client.bet(player, 10_00, idem=bet_key, game_id="slots")
    before = await wallet_snapshot(db, player)
    err = await fails(client, "Rollback", pb.RollbackRequest(
        player_id=player, currency="USD", game_id="roulette", bet_idempotency_key=bet_key,
        idempotency_key=key("rb")))
    check_invalid(err, "game_id", None)
    assert await wallet_snapshot(db, player) == before


async def test_adjust_debit_beyond_cash_is_insufficient_funds(
        client: Client, db: asyncpg.Connection, player: str, ledger_clean: None) -> None:
    """A support debit larger than the cash is FAILED_PRECONDITION / INSUFFICIENT_FUNDS."""
    await client.funded(player, 10_00)
    before = await wallet_snapshot(db, player)
    err = await fails(client, "Adjust", pb.AdjustRequest(
        player_id=player, currency="USD", bucket=pb.BUCKET_CASH, amount=-10_01,
        reason="correction", idempotency_key=key("adj")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, (err.code(), err.details())
    assert error_info(err).reason == "INSUFFICIENT_FUNDS"
    assert (await wallet_snapshot(db, player))[0] == before[0]
    assert (await client.balance(player)).cash == 10_00


@pytest.mark.parametrize("amount", [5_00, -5_00])
async def test_adjust_bonus_without_active_bonus_is_refused(
        client: Client, db: asyncpg.Connection, player: str, amount: int,
        ledger_clean: None) -> None:
    """Adjusting BUCKET_BONUS with no active bonus is FAILED_PRECONDITION / NO_ACTIVE_BONUS."""
    await client.funded(player, 10_00)
    before = await wallet_snapshot(db, player)
    err = await fails(client, "Adjust", pb.AdjustRequest(
        player_id=player, currency="USD", bucket=pb.BUCKET_BONUS, amount=amount,
        reason="correction", idempotency_key=key("adj")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, (err.code(), err.details())
    assert error_info(err).reason == "NO_ACTIVE_BONUS"
    assert (await wallet_snapshot(db, player))[0] == before[0]


# -- 4. message size -------------------------------------------------------------------------

OVERSIZED = [
    ("CancelWithdrawal", lambda: pb.CancelWithdrawalRequest(
        withdrawal_id="1", reason="r" * 100_000, idempotency_key=key("xw"))),
    ("ReverseWithdrawal", lambda: pb.ReverseWithdrawalRequest(
        withdrawal_id="1", reason="r" * 100_000, idempotency_key=key("rw"))),
    ("Adjust", lambda: pb.AdjustRequest(
        player_id="p1", currency="USD", bucket=pb.BUCKET_CASH, amount=1, reason="r" * 100_000,
        idempotency_key=key("adj"))),
    ("Bet", lambda: pb.BetRequest(
        player_id="p1", currency="USD", amount=1, game_id="g", round_id="r",
        idempotency_key="k" * 70_000)),
]


@pytest.mark.parametrize(("method", "make"), OVERSIZED, ids=[m for m, _ in OVERSIZED])
async def test_oversized_request_is_resource_exhausted(client: Client, db: asyncpg.Connection,
                                                       method: str, make: Callable[[], Any],
                                                       ledger_clean: None) -> None:
    """A request over the 64 KiB limit is RESOURCE_EXHAUSTED with ErrorInfo
    MESSAGE_TOO_LARGE naming its size and the limit, and writes nothing."""
    request = make()
    assert request.ByteSize() > 64 * 1024
    await quiet_bonus_sweeper(db)
    before = await db.fetchval("SELECT count(*) FROM wallet.journal")
    err = await fails(client, method, request)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (err.code(), err.details())
    info = error_info(err)
    assert info.reason == "MESSAGE_TOO_LARGE"
    assert info.metadata["size_bytes"] == str(request.ByteSize())
    assert info.metadata["limit_bytes"] == str(64 * 1024)
    assert await db.fetchval("SELECT count(*) FROM wallet.journal") == before


async def test_request_past_the_transport_cap_is_refused_by_grpc(
        client: Client, db: asyncpg.Connection, ledger_clean: None) -> None:
    """Past 4x the limit gRPC refuses the request before reading it: RESOURCE_EXHAUSTED
    without details (the one refusal the transport answers itself), nothing written."""
    request = pb.AdjustRequest(player_id="p1", currency="USD", bucket=pb.BUCKET_CASH, amount=1,
                               reason="r" * (4 * 64 * 1024 + 1), idempotency_key=key("adj"))
    await quiet_bonus_sweeper(db)
    before = await db.fetchval("SELECT count(*) FROM wallet.journal")
    err = await fails(client, method="Adjust", request=request)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (err.code(), err.details())
    assert await db.fetchval("SELECT count(*) FROM wallet.journal") == before


# -- 5. health and reflection ----------------------------------------------------------------

@pytest.mark.parametrize("service", ["", SERVICE])
async def test_health_is_serving_without_token(server: Running, service: str) -> None:
    """grpc.health.v1 Check answers SERVING for "" and the wallet service, with no token."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        r = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert r.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_wallet_service(server: Running) -> None:
    """Server reflection (v1alpha) lists wallet.v1.WalletService without a token."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names: list[str] = []
        async for response in call:
            names += [s.name for s in response.list_services_response.service]
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names
