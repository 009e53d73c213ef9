"""wallet_client against a real wallet over gRPC: every RPC through its typed method, a
reply lost on the wire retried and answered by a replay, refusals raised once and never
retried, the deadline kept, and calls spread over every address."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

import wallet_client as wc
from tests.client.proxies import BlackHole, Proxy
from tests.helpers import SERVICES, TOKENS, key
from wallet_core.server import Running

pytestmark = pytest.mark.usefixtures("ledger_clean")


@pytest.fixture
async def clients(server: Running) -> AsyncIterator[dict[str, wc.AsyncWalletClient]]:
    made = {scope: wc.AsyncWalletClient(f"127.0.0.1:{server.port}", token=token)
            for scope, token in TOKENS.items()}
    yield made
    for client in made.values():
        await client.close()


async def _funded(clients: dict[str, wc.AsyncWalletClient], player: str,
                  amount_minor: int = 10_000) -> None:
    await clients["payments"].open_wallet(player, "EUR", key=key("open"))
    await clients["payments"].deposit(player, "EUR", amount_minor, psp="stripe",
                                      psp_reference=key("ref"), key=key("dep"))


async def test_every_rpc_through_its_typed_method(
        clients: dict[str, wc.AsyncWalletClient], player: str) -> None:
    pay, game, bonus = clients["payments"], clients["game"], clients["bonus"]
    opened = await pay.open_wallet(player, "EUR", key=key("open"))
    assert opened.created and opened.operation.balances == wc.Balances("EUR", 0, 0, 0, 0)
    dep = await pay.deposit(player, "EUR", 10_000, psp="stripe", psp_reference=key("r"),
                            key=key("dep"))
    assert dep.balances.cash_minor == 10_000 and not dep.replay

    rk = wc.RoundKeys(caller="slots-test", round_id=key("round"))
    bet = await game.bet(player, "EUR", 300, game_id="slots", round_id=rk.round_id,
                         key=rk.bet())
    assert (bet.cash_minor, bet.bonus_minor) == (300, 0)
    won = await game.win(player, "EUR", 500, game_id="slots", round_id=rk.round_id,
                         key=rk.win())
    assert won.operation.balances.cash_minor == 10_200
    bet2 = await game.bet(player, "EUR", 100, game_id="slots", round_id=rk.round_id,
                          key=rk.bet(1))
    back = await game.rollback(player, "EUR", game_id="slots", bet_key=rk.bet(1),
                               key=rk.rollback(1))
    assert back.outcome == "REVERSED" and back.cash_minor == bet2.cash_minor == 100

    granted = await bonus.grant_bonus(player, "EUR", 1_000, wagering_requirement_minor=5_000,
                                      expires_at=datetime.now(UTC) + timedelta(days=7),
                                      key=key("grant"))
    (listed,) = await bonus.get_bonuses(player, "EUR")
    assert listed.bonus_id == granted.bonus_id and listed.state == "ACTIVE"
    assert listed.balance_minor == 1_000 and listed.wagering_requirement_minor == 5_000
    forfeited = await bonus.forfeit_bonus(granted.bonus_id, key=key("forfeit"))
    assert forfeited.forfeited_minor == 1_000

    held = await pay.reserve_withdrawal(player, "EUR", 2_000, psp="stripe", key=key("res"))
    assert held.operation.balances.reserved_minor == 2_000
    await pay.cancel_withdrawal(held.withdrawal_id, reason="player", key=key("cancel"))
    paid = await pay.reserve_withdrawal(player, "EUR", 1_000, psp="stripe", key=key("res"))
    await pay.commit_withdrawal(paid.withdrawal_id, key=key("commit"))
    reversed_ = await pay.reverse_withdrawal(paid.withdrawal_id, reason="returned",
                                             key=key("rev"))
    assert reversed_.balances.cash_minor == 10_200
    await pay.chargeback(player, "EUR", 200, psp="stripe", psp_reference=key("cb"),
                         key=key("cb"))
    fixed = await clients["support"].adjust(player, "EUR", 50, bucket="CASH",
                                            reason="goodwill", key=key("adj"))
    assert fixed.balances.cash_minor == 10_050
    assert (await pay.get_balance(player, "EUR")).cash_minor == 10_050

    tx = await clients["read"].get_transaction(key=rk.bet(), caller=SERVICES["game"])
    assert tx.transaction_id == bet.operation.transaction_id and tx.kind == "bet"
    assert sum(p.amount_minor for p in tx.postings) == 0
    page = await clients["read"].list_transactions(player, "EUR", page_size=3)
    assert len(page.transactions) == 3 and page.next_page_token
    assert (await clients["read"].get_transaction(transaction_id=tx.transaction_id)).caller \
        == SERVICES["game"]

    changed = await clients["limits"].set_limits(
        player, "EUR", [wc.LimitChange("WAGER", "DAY", amount_minor=1_000)], key=key("lim"))
    (limit,) = changed.limits.limits
    assert (limit.kind, limit.period, limit.amount_minor) == ("WAGER", "DAY", 1_000)
    assert (await clients["limits"].get_limits(player, "EUR")).limits == changed.limits.limits
    restricted = await clients["compliance"].restrict(player, "EUR", reason="COUNTRY_BLOCKED",
                                                      key=key("restrict"))
    assert restricted.limits.restriction == "COUNTRY_BLOCKED"
    lifted = await clients["compliance"].restrict(player, "EUR", reason=None,
                                                  key=key("lift"))
    assert lifted.limits.restriction == ""
    broke = await clients["limits"].exclude(player, "EUR", kind="TIMEOUT",
                                            duration_s=86_400, key=key("break"))
    assert broke.limits.timeout_until is not None
    with pytest.raises(wc.PlayerOnBreak) as on_break:
        await game.bet(player, "EUR", 1, game_id="slots", round_id="r", key=key("b"))
    assert on_break.value.reason == "TIMED_OUT" and on_break.value.metadata["until"]


async def test_batch_returns_each_operations_result_or_error(
        clients: dict[str, wc.AsyncWalletClient], player: str) -> None:
    await _funded(clients, player, 1_000)
    ok = pb.BatchOperation(bet=pb.BetRequest(player_id=player, currency="EUR", amount=400,
                                             game_id="g", round_id="r1",
                                             idempotency_key=key("b")))
    too_much = pb.BatchOperation(bet=pb.BetRequest(player_id=player, currency="EUR",
                                                   amount=5_000, game_id="g", round_id="r2",
                                                   idempotency_key=key("b")))
    first, second = await clients["game"].execute_batch([ok, too_much])
    assert isinstance(first, wc.Staked) and first.cash_minor == 400
    assert isinstance(second, wc.InsufficientFunds)


async def test_refusals_raise_their_exception_once_and_are_not_retried(
        clients: dict[str, wc.AsyncWalletClient], server: Running, player: str) -> None:
    await _funded(clients, player, 100)
    retried: list[wc.RetryEvent] = []
    proxy = await Proxy(server.port).start()
    game = wc.AsyncWalletClient(f"127.0.0.1:{proxy.port}", token=TOKENS["game"],
                                on_retry=retried.append)
    try:
        bet_key = key("bet")
        with pytest.raises(wc.InsufficientFunds) as refused:
            await game.bet(player, "EUR", 500, game_id="g", round_id="r", key=bet_key)
        assert refused.value.code == "FAILED_PRECONDITION" and not refused.value.replay
        sent = proxy.bytes_up
        # The same key again: the recorded refusal, marked as a replay.
        with pytest.raises(wc.InsufficientFunds) as again:
            await game.bet(player, "EUR", 500, game_id="g", round_id="r", key=bet_key)
        assert again.value.replay
        with pytest.raises(wc.KeyReused) as reused:
            await game.bet(player, "EUR", 50, game_id="g", round_id="r", key=bet_key)
        assert reused.value.field == "idempotency_key"
        with pytest.raises(wc.InvalidRequest) as invalid:
            await game.bet(player, "EUR", -5, game_id="g", round_id="r", key=key("bet"))
        assert invalid.value.field == "amount"
        with pytest.raises(wc.WalletNotFound):
            await game.bet("p-nobody", "EUR", 5, game_id="g", round_id="r", key=key("bet"))
        with pytest.raises(wc.PermissionDenied):
            await game.deposit(player, "EUR", 5, psp="s", psp_reference="x", key=key("d"))
        assert retried == [], f"refusals were retried: {retried}"
        assert sent > 0 and proxy.connections == 1
    finally:
        await game.close()
        await proxy.close()
    assert (await clients["payments"].get_balance(player, "EUR")).cash_minor == 100


async def test_a_lost_reply_is_retried_with_the_same_key_and_replayed(
        clients: dict[str, wc.AsyncWalletClient], server: Running, player: str) -> None:
    await _funded(clients, player, 1_000)
    proxy = await Proxy(server.port).start()
    retried: list[wc.RetryEvent] = []
    game = wc.AsyncWalletClient(f"127.0.0.1:{proxy.port}", token=TOKENS["game"],
                                on_retry=retried.append)
    try:
        await game.get_balance(player, "EUR")  # the connection is up before the cut
        proxy.lose_next_reply()
        rk = wc.RoundKeys("slots-test", key("round"))
        bet = await game.bet(player, "EUR", 300, game_id="slots", round_id=rk.round_id,
                             key=rk.bet())
    finally:
        await game.close()
        await proxy.close()
    assert proxy.replies_lost == 1
    assert [(e.method, e.code) for e in retried] == [("Bet", "UNAVAILABLE")]
    # The first attempt was carried out; the retry got its recorded outcome.
    assert bet.operation.replay
    assert bet.operation.balances.cash_minor == 700
    assert (await clients["payments"].get_balance(player, "EUR")).cash_minor == 700
    page = await clients["read"].list_transactions(player, "EUR")
    assert [t.kind for t in page.transactions].count("bet") == 1


async def test_the_deadline_is_never_exceeded() -> None:
    hole = await BlackHole().start()
    retried: list[wc.RetryEvent] = []
    client = wc.AsyncWalletClient(f"127.0.0.1:{hole.port}", token="t" * 20, deadline_ms=900,
                                  attempt_timeout_ms=400, on_retry=retried.append)
    try:
        started = time.monotonic()
        with pytest.raises(wc.WalletUnavailable) as unknown:
            await client.bet("p", "EUR", 1, game_id="g", round_id="r", key="k-1")
        elapsed_ms = (time.monotonic() - started) * 1000
        # Per-call override, shorter than the default.
        started = time.monotonic()
        with pytest.raises(wc.WalletUnavailable):
            await client.get_balance("p", "EUR", timeout_ms=300)
        short_ms = (time.monotonic() - started) * 1000
    finally:
        await client.close()
        await hole.close()
    assert unknown.value.code == "DEADLINE_EXCEEDED"
    assert "same idempotency key" in unknown.value.message
    assert [e.method for e in retried][:1] == ["Bet"], "no attempt was retried"
    # Bounded by the deadline, with room for a busy shared machine. A client that ignored it
    # would take 5 attempts of 400 ms (2 s), and 900 ms for the per-call override.
    assert elapsed_ms <= 900 + 400, elapsed_ms
    assert short_ms <= 300 + 400, short_ms


async def test_calls_spread_over_every_address(server: Running, player: str,
                                               clients: dict[str, wc.AsyncWalletClient],
                                               ) -> None:
    await _funded(clients, player)
    a, b = await Proxy(server.port).start(), await Proxy(server.port).start()
    client = wc.AsyncWalletClient(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}",
                                  token=TOKENS["read"])
    try:
        for _ in range(20):
            await client.get_balance(player, "EUR")
        up = (a.bytes_up, b.bytes_up)
    finally:
        await client.close()
        await a.close()
        await b.close()
    # Each address got a share of 20 calls, not just its connection's handshake.
    assert min(up) > 5 * len(pb.GetBalanceRequest(player_id=player,
                                                  currency="EUR").SerializeToString()), up


async def test_the_blocking_client_shares_the_rules(server: Running) -> None:
    # In a thread: the wallet under test serves from this event loop.
    await asyncio.to_thread(_blocking_session, server.port)


def _blocking_session(port: int) -> None:
    player = key("p")
    with wc.WalletClient(f"127.0.0.1:{port}", token=TOKENS["payments"]) as pay, \
            wc.WalletClient(f"127.0.0.1:{port}", token=TOKENS["game"]) as game:
        pay.open_wallet(player, "EUR", key=key("open"))
        pay.deposit(player, "EUR", 100, psp="s", psp_reference=key("r"), key=key("d"))
        bet_key = key("bet")
        first = game.bet(player, "EUR", 60, game_id="g", round_id="r", key=bet_key)
        again = game.bet(player, "EUR", 60, game_id="g", round_id="r", key=bet_key)
        assert again.operation.replay and again.operation.transaction_id == \
            first.operation.transaction_id
        with pytest.raises(wc.InsufficientFunds):
            game.bet(player, "EUR", 60, game_id="g", round_id="r", key=key("bet"))


async def test_published_service_config_drives_a_raw_stub(server: Running,
                                                          player: str) -> None:
    options = [("grpc.service_config", wc.service_config())]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}",
                                         options=options) as channel:
        stub = pb_grpc.WalletServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetBalance(pb.GetBalanceRequest(player_id=player, currency="EUR"),
                                  metadata=[("authorization", f"Bearer {TOKENS['read']}")])
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert '"retryableStatusCodes":["UNAVAILABLE","ABORTED"]' in wc.service_config()


async def test_concurrent_calls_with_one_key_move_money_once(
        clients: dict[str, wc.AsyncWalletClient], player: str) -> None:
    await _funded(clients, player, 1_000)
    bet_key = key("bet")
    bets = await asyncio.gather(*(clients["game"].bet(player, "EUR", 100, game_id="g",
                                                      round_id="r", key=bet_key)
                                  for _ in range(10)))
    assert len({b.operation.transaction_id for b in bets}) == 1
    assert (await clients["game"].get_balance(player, "EUR")).cash_minor == 900


async def test_closing_the_client_ends_its_retries() -> None:
    """A call in flight when the client closes ends with WalletUnavailable (the outcome is
    unknown), not with a retry on a closed channel or an error of gRPC's own."""
    hole = await BlackHole().start()
    client = wc.AsyncWalletClient(f"127.0.0.1:{hole.port}", token="t" * 20,
                                  deadline_ms=5_000, attempt_timeout_ms=200)
    try:
        call = asyncio.create_task(client.get_balance("p", "EUR"))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await client.close()
        with pytest.raises(wc.WalletUnavailable):
            await call
        assert time.monotonic() - started < 2.0
    finally:
        await hole.close()
