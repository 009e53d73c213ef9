"""End-to-end money semantics over real gRPC: wallets, bets/wins/rollbacks, bonuses,
withdrawals (and their reversals), chargebacks, adjustments and the journal reads. Exact
numbers throughout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from wallet.v1 import wallet_service_pb2 as pb

from tests.helpers import SERVICES, Client, error_info, key, wait_for

# -- small helpers ---------------------------------------------------------------------------


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode, reason: str) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    err = exc.value
    info = error_info(err)
    assert (err.code(), info.reason) == (code, reason), (err.code(), info.reason, err.details())
    return info


def bal(b: pb.Balances) -> tuple[int, int, int, int]:
    return (b.cash, b.bonus, b.reserved, b.available)


async def wallet_id(db: asyncpg.Connection, player: str, currency: str = "USD") -> int:
    wid = await db.fetchval("SELECT id FROM wallet.wallets WHERE player_id = $1 AND currency = $2",
                            player, currency)
    assert wid is not None
    return int(wid)


async def bonuses(client: Client, player: str, include_inactive: bool = True,
                  currency: str = "USD") -> dict[str, pb.Bonus]:
    r = await client.call("GetBonuses", pb.GetBonusesRequest(
        player_id=player, currency=currency, include_inactive=include_inactive), "bonus")
    return {b.bonus_id: b for b in r.bonuses}


async def forfeit(client: Client, bonus_id: str,
                  idem: str | None = None) -> pb.ForfeitBonusResponse:
    r: pb.ForfeitBonusResponse = await client.call(
        "ForfeitBonus", pb.ForfeitBonusRequest(
            bonus_id=bonus_id, idempotency_key=idem or key("forfeit")), "bonus")
    return r


async def reserve(client: Client, player: str, amount: int,
                  currency: str = "USD") -> pb.ReserveWithdrawalResponse:
    r: pb.ReserveWithdrawalResponse = await client.call(
        "ReserveWithdrawal", pb.ReserveWithdrawalRequest(
            player_id=player, currency=currency, amount=amount, psp="stripe",
            idempotency_key=key("res")), "payments")
    return r


async def commit(client: Client, wid: str, idem: str | None = None) -> pb.CommitWithdrawalResponse:
    r: pb.CommitWithdrawalResponse = await client.call(
        "CommitWithdrawal", pb.CommitWithdrawalRequest(
            withdrawal_id=wid, idempotency_key=idem or key("commit")), "payments")
    return r


async def cancel(client: Client, wid: str) -> pb.CancelWithdrawalResponse:
    r: pb.CancelWithdrawalResponse = await client.call(
        "CancelWithdrawal", pb.CancelWithdrawalRequest(
            withdrawal_id=wid, reason="player asked", idempotency_key=key("cancel")), "payments")
    return r


async def reverse(client: Client, wid: str, idem: str | None = None,
                  reason: str = "payout.failed: account_closed") -> pb.ReverseWithdrawalResponse:
    r: pb.ReverseWithdrawalResponse = await client.call(
        "ReverseWithdrawal", pb.ReverseWithdrawalRequest(
            withdrawal_id=wid, reason=reason, idempotency_key=idem or key("reverse")),
        "payments")
    return r


async def chargeback(client: Client, player: str, amount: int) -> pb.ChargebackResponse:
    ref = key("cb")
    r: pb.ChargebackResponse = await client.call(
        "Chargeback", pb.ChargebackRequest(
            player_id=player, currency="USD", amount=amount, psp="stripe",
            psp_reference=f"ch_{ref}", idempotency_key=ref), "payments")
    return r


async def adjust(client: Client, player: str, bucket: pb.Bucket, amount: int,
                 reason: str = "support correction") -> pb.AdjustResponse:
    r: pb.AdjustResponse = await client.call(
        "Adjust", pb.AdjustRequest(
            player_id=player, currency="USD", bucket=bucket, amount=amount, reason=reason,
            idempotency_key=key("adj")), "support")
    return r


async def get_tx(client: Client, tid: str) -> pb.Transaction:
    r: pb.GetTransactionResponse = await client.call(
        "GetTransaction", pb.GetTransactionRequest(transaction_id=tid), "support")
    return r.transaction


async def list_tx(client: Client, player: str, page_size: int = 0, token: str = "",
                  currency: str = "USD") -> pb.ListTransactionsResponse:
    r: pb.ListTransactionsResponse = await client.call(
        "ListTransactions", pb.ListTransactionsRequest(
            player_id=player, currency=currency, page_size=page_size, page_token=token), "support")
    return r


# -- OpenWallet --------------------------------------------------------------------------------


async def test_open_wallet_created_then_existing(client: Client, player: str,
                                                 ledger_clean: None) -> None:
    """First OpenWallet creates; a new key for the same player+currency reports created=False."""
    first = await client.open(player)
    assert first.created is True
    assert first.result.replay is False
    assert bal(first.result.balances) == (0, 0, 0, 0)
    second = await client.open(player)
    assert second.created is False
    assert second.result.replay is False
    assert second.result.transaction_id != first.result.transaction_id


async def test_open_wallet_same_key_replays(client: Client, player: str,
                                            ledger_clean: None) -> None:
    """OpenWallet repeated with the same key replays: replay=True and the same transaction id."""
    req = pb.OpenWalletRequest(player_id=player, currency="USD", idempotency_key=key("open"))
    first = await client.call("OpenWallet", req, "payments")
    again = await client.call("OpenWallet", req, "payments")
    assert first.result.replay is False
    assert again.result.replay is True
    assert again.result.transaction_id == first.result.transaction_id
    assert again.created is True  # the recorded outcome of the first call


async def test_wallets_in_two_currencies_are_independent(client: Client, player: str,
                                                         ledger_clean: None) -> None:
    """USD and EUR wallets of one player hold separate balances."""
    await client.funded(player, 100_00, "USD")
    await client.funded(player, 7_00, "EUR")
    await client.bet(player, 30_00)
    assert bal(await client.balance(player, "USD")) == (70_00, 0, 0, 70_00)
    assert bal(await client.balance(player, "EUR")) == (7_00, 0, 0, 7_00)
    assert (await client.balance(player, "EUR")).currency == "EUR"


async def test_jpy_and_btc_wallets(client: Client, player: str, ledger_clean: None) -> None:
    """JPY (scale 0) and BTC (scale 8) wallets open and take deposits in their minor units."""
    await client.funded(player, 1500, "JPY")
    await client.funded(player, 12_345_678, "BTC")
    jpy = await client.balance(player, "JPY")
    btc = await client.balance(player, "BTC")
    assert (jpy.currency, bal(jpy)) == ("JPY", (1500, 0, 0, 1500))
    assert (btc.currency, bal(btc)) == ("BTC", (12_345_678, 0, 0, 12_345_678))
    r = await client.bet(player, 500, currency="JPY")
    assert (r.cash_amount, r.bonus_amount) == (500, 0)
    assert bal(r.result.balances) == (1000, 0, 0, 1000)


# -- Deposit -----------------------------------------------------------------------------------


async def test_deposit_postings(client: Client, db: asyncpg.Connection, player: str,
                                ledger_clean: None) -> None:
    """Deposit credits cash; its postings are player cash +amount and psp:stripe -amount."""
    await client.open(player)
    r = await client.deposit(player, 42_50)
    assert bal(r.result.balances) == (42_50, 0, 0, 42_50)
    tx = await get_tx(client, r.result.transaction_id)
    wid = await wallet_id(db, player)
    postings = {p.account: p.amount for p in tx.postings}
    assert postings == {f"player:{wid}:cash": 42_50, "psp:stripe": -42_50}
    assert sum(postings.values()) == 0
    assert (tx.kind, tx.status, tx.player_id, tx.currency) == ("deposit", "ok", player, "USD")


# -- Bet / Win ---------------------------------------------------------------------------------


async def test_bet_spends_cash_then_bonus(client: Client, player: str, ledger_clean: None) -> None:
    """A bet takes cash first, then bonus, and reports the split."""
    await client.funded(player, 30)
    await client.grant(player, 100, wagering=10_000)
    r = await client.bet(player, 100)
    assert (r.cash_amount, r.bonus_amount) == (30, 70)
    assert bal(r.result.balances) == (0, 30, 0, 30)


async def test_win_split_proportional_to_stake(client: Client, player: str,
                                               ledger_clean: None) -> None:
    """A win on a 30 cash + 70 bonus round pays 30 cash / 70 bonus."""
    await client.funded(player, 30)
    await client.grant(player, 100, wagering=10_000)
    await client.bet(player, 100, round_id="rw")
    w = await client.win(player, 100, round_id="rw")
    assert (w.cash_amount, w.bonus_amount) == (30, 70)
    assert bal(w.result.balances) == (30, 100, 0, 130)


async def test_win_split_remainder_goes_to_bonus(client: Client, player: str,
                                                 ledger_clean: None) -> None:
    """Odd amounts: the win split's remainder goes to bonus (stake 1+2, win 10 → 3 / 7)."""
    await client.funded(player, 1)
    await client.grant(player, 100, wagering=10_000)
    r = await client.bet(player, 3, round_id="odd")
    assert (r.cash_amount, r.bonus_amount) == (1, 2)
    w = await client.win(player, 10, round_id="odd")
    assert (w.cash_amount, w.bonus_amount) == (3, 7)
    assert bal(w.result.balances) == (3, 98 + 7, 0, 108)


async def test_win_without_bet_is_cash(client: Client, player: str, ledger_clean: None) -> None:
    """A win on a round with no stake (free spins) is all cash, even with an active bonus."""
    await client.funded(player, 0)
    await client.grant(player, 100, wagering=10_000)
    w = await client.win(player, 55, round_id="free-spins")
    assert (w.cash_amount, w.bonus_amount) == (55, 0)
    assert bal(w.result.balances) == (55, 100, 0, 155)


async def test_win_after_bonus_forfeited_is_cash(client: Client, player: str,
                                                 ledger_clean: None) -> None:
    """A win on a bonus-staked round after the bonus was forfeited is all cash."""
    await client.funded(player, 30)
    g = await client.grant(player, 100, wagering=10_000)
    await client.bet(player, 100, round_id="rf")
    f = await forfeit(client, g.bonus_id)
    assert f.forfeited_amount == 30
    w = await client.win(player, 100, round_id="rf")
    assert (w.cash_amount, w.bonus_amount) == (100, 0)
    assert bal(w.result.balances) == (100, 0, 0, 100)


# -- Rollback ----------------------------------------------------------------------------------


async def test_rollback_reverses_split(client: Client, player: str, ledger_clean: None) -> None:
    """Rollback returns exactly the bet's cash and bonus parts and undoes its wagering."""
    await client.funded(player, 30)
    g = await client.grant(player, 100, wagering=10_000)
    bet_key = key("bet")
    await client.bet(player, 100, idem=bet_key)
    rb = await client.rollback(player, bet_key)
    assert rb.outcome == pb.ROLLBACK_OUTCOME_REVERSED
    assert (rb.cash_amount, rb.bonus_amount) == (30, 70)
    assert bal(rb.result.balances) == (30, 100, 0, 130)
    b = (await bonuses(client, player))[g.bonus_id]
    assert (b.state, b.balance, b.wagered) == (pb.BONUS_STATE_ACTIVE, 100, 0)


async def test_rollback_twice_and_replay(client: Client, player: str, ledger_clean: None) -> None:
    """Rollback again with a new key: ALREADY_ROLLED_BACK, nothing moves; same key: replay."""
    await client.funded(player, 100)
    bet_key = key("bet")
    await client.bet(player, 40, idem=bet_key)
    rb_key = key("rb")
    first = await client.rollback(player, bet_key, idem=rb_key)
    assert first.outcome == pb.ROLLBACK_OUTCOME_REVERSED
    assert bal(first.result.balances) == (100, 0, 0, 100)
    second = await client.rollback(player, bet_key)
    assert second.outcome == pb.ROLLBACK_OUTCOME_ALREADY_ROLLED_BACK
    assert (second.cash_amount, second.bonus_amount) == (0, 0)
    assert bal(second.result.balances) == (100, 0, 0, 100)
    assert second.result.transaction_id != first.result.transaction_id
    again = await client.rollback(player, bet_key, idem=rb_key)
    assert again.result.replay is True
    assert again.result.transaction_id == first.result.transaction_id
    assert again.outcome == pb.ROLLBACK_OUTCOME_REVERSED
    assert (again.cash_amount, again.bonus_amount) == (40, 0)
    assert bal(await client.balance(player)) == (100, 0, 0, 100)


async def test_rollback_unknown_bet_tombstones(client: Client, player: str,
                                               ledger_clean: None) -> None:
    """Rollback of an unknown bet is BET_NOT_FOUND; the late bet is then refused with no debit."""
    await client.funded(player, 100)
    bet_key = key("bet")
    rb = await client.rollback(player, bet_key)
    assert rb.outcome == pb.ROLLBACK_OUTCOME_BET_NOT_FOUND
    assert (rb.cash_amount, rb.bonus_amount) == (0, 0)
    assert bal(rb.result.balances) == (100, 0, 0, 100)
    await expect_error(client.bet(player, 25, idem=bet_key),
                       grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_ROLLED_BACK")
    assert bal(await client.balance(player)) == (100, 0, 0, 100)


async def test_rollback_never_fails_for_lack_of_funds(client: Client, player: str,
                                                      ledger_clean: None) -> None:
    """A rollback works after the rest of the cash was withdrawn (cash 0 at rollback time)."""
    await client.funded(player, 100)
    bet_key = key("bet")
    await client.bet(player, 60, idem=bet_key)
    w = await reserve(client, player, 40)
    await commit(client, w.withdrawal_id)
    assert bal(await client.balance(player)) == (0, 0, 0, 0)
    rb = await client.rollback(player, bet_key)
    assert rb.outcome == pb.ROLLBACK_OUTCOME_REVERSED
    assert bal(rb.result.balances) == (60, 0, 0, 60)


async def test_rollback_after_conversion_returns_cash(client: Client, player: str,
                                                      ledger_clean: None) -> None:
    """Rollback of a bonus-funded bet after the bonus converted returns the bonus part as cash."""
    await client.funded(player, 0)
    g = await client.grant(player, 100, wagering=120)
    bet_key = key("bet")
    r = await client.bet(player, 80, idem=bet_key)
    assert (r.cash_amount, r.bonus_amount) == (0, 80)
    await client.deposit(player, 40)
    r2 = await client.bet(player, 40)
    assert (r2.cash_amount, r2.bonus_amount) == (40, 0)
    assert bal(r2.result.balances) == (20, 0, 0, 20)  # 20 bonus left converted to cash
    assert (await bonuses(client, player))[g.bonus_id].state == pb.BONUS_STATE_CONVERTED
    rb = await client.rollback(player, bet_key)
    assert rb.outcome == pb.ROLLBACK_OUTCOME_REVERSED
    assert bal(rb.result.balances) == (100, 0, 0, 100)


# -- Bonuses -----------------------------------------------------------------------------------


async def test_bonus_wagering_progress_then_conversion(client: Client, player: str,
                                                       ledger_clean: None) -> None:
    """Bets count toward wagering; meeting the requirement converts the remaining bonus to cash."""
    await client.funded(player, 300)
    g = await client.grant(player, 100, wagering=200)
    await client.bet(player, 50)
    b = (await bonuses(client, player, include_inactive=False))[g.bonus_id]
    assert (b.state, b.granted_amount, b.balance, b.wagering_requirement, b.wagered) == (
        pb.BONUS_STATE_ACTIVE, 100, 100, 200, 50)
    r = await client.bet(player, 150)
    assert (r.cash_amount, r.bonus_amount) == (150, 0)
    assert bal(r.result.balances) == (200, 0, 0, 200)
    b = (await bonuses(client, player))[g.bonus_id]
    assert (b.state, b.balance, b.wagered) == (pb.BONUS_STATE_CONVERTED, 0, 200)
    assert g.bonus_id not in await bonuses(client, player, include_inactive=False)


async def test_bonus_zero_requirement_converts_at_once(client: Client, player: str,
                                                       ledger_clean: None) -> None:
    """A bonus granted with wagering requirement 0 converts to cash immediately."""
    await client.funded(player, 0)
    g = await client.grant(player, 50, wagering=0)
    assert bal(g.result.balances) == (50, 0, 0, 50)
    b = (await bonuses(client, player))[g.bonus_id]
    assert (b.state, b.balance) == (pb.BONUS_STATE_CONVERTED, 0)


async def test_forfeit_bonus(client: Client, player: str, ledger_clean: None) -> None:
    """ForfeitBonus empties the bonus (FORFEITED); forfeiting again is BONUS_NOT_ACTIVE."""
    await client.funded(player, 10)
    g = await client.grant(player, 100, wagering=1000)
    f = await forfeit(client, g.bonus_id)
    assert f.forfeited_amount == 100
    assert bal(f.result.balances) == (10, 0, 0, 10)
    b = (await bonuses(client, player))[g.bonus_id]
    assert (b.state, b.balance) == (pb.BONUS_STATE_FORFEITED, 0)
    await expect_error(forfeit(client, g.bonus_id), grpc.StatusCode.FAILED_PRECONDITION,
                       "BONUS_NOT_ACTIVE")
    assert bal(await client.balance(player)) == (10, 0, 0, 10)


async def test_bonus_expires_by_sweeper(client: Client, player: str, redis_client: Any,
                                        ledger_clean: None) -> None:
    """A bonus past its expiry is EXPIRED by the sweeper and the bonus bucket drops to 0."""
    await client.funded(player, 5)
    expires = Timestamp()
    expires.FromDatetime(datetime.now(UTC) + timedelta(seconds=1.5))
    g = await client.call("GrantBonus", pb.GrantBonusRequest(
        player_id=player, currency="USD", amount=100, wagering_requirement=1000,
        expires_at=expires, idempotency_key=key("grant")), "bonus")
    assert bal(g.result.balances) == (5, 100, 0, 105)

    async def expired() -> bool:
        b = (await bonuses(client, player, include_inactive=True))[g.bonus_id]
        return b.state == pb.BONUS_STATE_EXPIRED
    # A sweeper pass every 200 ms; the bound leaves a loaded machine time for several. On
    # timeout the assertions below say what was found instead.
    with contextlib.suppress(TimeoutError):
        await wait_for(expired, timeout_s=10)
    b = (await bonuses(client, player, include_inactive=True))[g.bonus_id]
    # The sweeper's key is "bonus-expire:<bonus id>" (caller "system"); a cached outcome left in
    # Redis db 15 by an earlier run (whose fresh database reused this id) is replayed instead.
    stale = await redis_client.exists(f"wallet:idem:{{system}}:bonus-expire:{g.bonus_id}")
    assert (b.state, b.balance) == (pb.BONUS_STATE_EXPIRED, 0), (
        f"bonus {g.bonus_id} not expired; sweeper idempotency key cached in Redis: {bool(stale)}")
    assert bal(await client.balance(player)) == (5, 0, 0, 5)


async def test_two_bonuses_oldest_first(client: Client, player: str, ledger_clean: None) -> None:
    """With two bonuses, stakes spend and wager the oldest first, the excess carrying over."""
    await client.funded(player, 0)
    a = await client.grant(player, 100, wagering=100)
    b = await client.grant(player, 100, wagering=100)
    await client.bet(player, 60)
    bs = await bonuses(client, player)
    assert (bs[a.bonus_id].balance, bs[a.bonus_id].wagered) == (40, 60)
    assert (bs[b.bonus_id].balance, bs[b.bonus_id].wagered) == (100, 0)
    r = await client.bet(player, 60)
    assert (r.cash_amount, r.bonus_amount) == (0, 60)
    bs = await bonuses(client, player)
    assert (bs[a.bonus_id].state, bs[a.bonus_id].balance, bs[a.bonus_id].wagered) == (
        pb.BONUS_STATE_CONVERTED, 0, 100)
    assert (bs[b.bonus_id].state, bs[b.bonus_id].balance, bs[b.bonus_id].wagered) == (
        pb.BONUS_STATE_ACTIVE, 80, 20)
    assert bal(r.result.balances) == (0, 80, 0, 80)


# -- Withdrawals -------------------------------------------------------------------------------


async def test_withdrawal_reserve_commit(client: Client, player: str, ledger_clean: None) -> None:
    """Reserve moves cash to reserved; over-reserving is refused; commit empties reserved."""
    await client.funded(player, 100)
    w = await reserve(client, player, 40)
    assert bal(w.result.balances) == (60, 0, 40, 60)
    await expect_error(reserve(client, player, 61), grpc.StatusCode.FAILED_PRECONDITION,
                       "INSUFFICIENT_FUNDS")
    c = await commit(client, w.withdrawal_id)
    assert c.result.replay is False
    assert bal(c.result.balances) == (60, 0, 0, 60)
    again = await commit(client, w.withdrawal_id)
    assert again.result.replay is True
    assert again.result.transaction_id == c.result.transaction_id
    await expect_error(cancel(client, w.withdrawal_id), grpc.StatusCode.FAILED_PRECONDITION,
                       "WITHDRAWAL_ALREADY_FINAL")
    assert bal(await client.balance(player)) == (60, 0, 0, 60)


async def test_withdrawal_cancel(client: Client, player: str, ledger_clean: None) -> None:
    """Cancel returns reserved cash; a commit after the cancel is refused."""
    await client.funded(player, 100)
    w = await reserve(client, player, 30)
    assert bal(w.result.balances) == (70, 0, 30, 70)
    c = await cancel(client, w.withdrawal_id)
    assert bal(c.result.balances) == (100, 0, 0, 100)
    await expect_error(commit(client, w.withdrawal_id), grpc.StatusCode.FAILED_PRECONDITION,
                       "WITHDRAWAL_ALREADY_FINAL")
    assert bal(await client.balance(player)) == (100, 0, 0, 100)


async def test_withdrawal_reverse_returns_cash(client: Client, db: asyncpg.Connection,
                                              player: str, ledger_clean: None) -> None:
    """Reversing a committed withdrawal credits cash from psp:<psp>; reserved is untouched."""
    await client.funded(player, 100_00)
    w = await reserve(client, player, 40_00)
    await reserve(client, player, 10_00)  # still held: the reversal must not touch it
    c = await commit(client, w.withdrawal_id)
    assert bal(c.result.balances) == (50_00, 0, 10_00, 50_00)
    r = await reverse(client, w.withdrawal_id, reason="payout.failed: account_closed")
    assert r.result.replay is False
    assert bal(r.result.balances) == (90_00, 0, 10_00, 90_00)
    tx = await get_tx(client, r.result.transaction_id)
    wid = await wallet_id(db, player)
    assert (tx.kind, tx.status, tx.player_id, tx.caller) == (
        "withdrawal_reverse", "ok", player, SERVICES["payments"])
    assert {p.account: p.amount for p in tx.postings} == {
        f"player:{wid}:cash": 40_00, "psp:stripe": -40_00}
    assert dict(tx.details) == {"withdrawal_id": w.withdrawal_id, "psp": "stripe",
                                "reason": "payout.failed: account_closed"}
    row = await db.fetchrow("SELECT state, final_journal_id, reversal_journal_id, "
                            "reversal_reason FROM wallet.withdrawals WHERE id = $1",
                            int(w.withdrawal_id))
    assert tuple(row) == ("reversed", int(c.result.transaction_id),
                          int(r.result.transaction_id), "payout.failed: account_closed")
    assert bal(await client.balance(player)) == (90_00, 0, 10_00, 90_00)


async def test_withdrawal_reverse_repeated_is_replay(client: Client, player: str,
                                                     ledger_clean: None) -> None:
    """A second reversal (new key or same key) replays the first; commit/cancel are refused."""
    await client.funded(player, 100_00)
    w = await reserve(client, player, 30_00)
    await commit(client, w.withdrawal_id)
    first_key = key("reverse")
    first = await reverse(client, w.withdrawal_id, idem=first_key)
    assert bal(first.result.balances) == (100_00, 0, 0, 100_00)
    for again in (await reverse(client, w.withdrawal_id),
                  await reverse(client, w.withdrawal_id, idem=first_key)):
        assert again.result.replay is True
        assert again.result.transaction_id == first.result.transaction_id
        assert again.result.balances == first.result.balances
    await expect_error(commit(client, w.withdrawal_id), grpc.StatusCode.FAILED_PRECONDITION,
                       "WITHDRAWAL_ALREADY_FINAL")
    await expect_error(cancel(client, w.withdrawal_id), grpc.StatusCode.FAILED_PRECONDITION,
                       "WITHDRAWAL_ALREADY_FINAL")
    assert bal(await client.balance(player)) == (100_00, 0, 0, 100_00)


@pytest.mark.parametrize("state", ["reserved", "cancelled"])
async def test_withdrawal_reverse_needs_a_committed_one(client: Client, db: asyncpg.Connection,
                                                        player: str, state: str,
                                                        ledger_clean: None) -> None:
    """Reversing a reserved or cancelled withdrawal is a recorded WITHDRAWAL_NOT_COMMITTED
    rejection (replayed on retry) and moves nothing."""
    await client.funded(player, 100_00)
    w = await reserve(client, player, 25_00)
    if state == "cancelled":
        await cancel(client, w.withdrawal_id)
    before = bal(await client.balance(player))
    rev_key = key("reverse")
    info = await expect_error(reverse(client, w.withdrawal_id, idem=rev_key),
                              grpc.StatusCode.FAILED_PRECONDITION, "WITHDRAWAL_NOT_COMMITTED")
    assert info.metadata["replay"] == "false"
    tx = await get_tx(client, info.metadata["transaction_id"])
    assert (tx.kind, tx.status, tx.reason, list(tx.postings)) == (
        "withdrawal_reverse", "rejected", "WITHDRAWAL_NOT_COMMITTED", [])
    again = await expect_error(reverse(client, w.withdrawal_id, idem=rev_key),
                               grpc.StatusCode.FAILED_PRECONDITION, "WITHDRAWAL_NOT_COMMITTED")
    assert again.metadata["replay"] == "true"
    assert again.metadata["transaction_id"] == info.metadata["transaction_id"]
    assert bal(await client.balance(player)) == before
    assert await db.fetchval("SELECT state FROM wallet.withdrawals WHERE id = $1",
                             int(w.withdrawal_id)) == state


async def test_withdrawal_reverse_credits_a_wallet_in_debt(client: Client, player: str,
                                                           ledger_clean: None) -> None:
    """A reversal only credits, so a wallet in debt after a chargeback is not refused."""
    await client.funded(player, 50_00)
    w = await reserve(client, player, 50_00)
    await commit(client, w.withdrawal_id)
    cb = await chargeback(client, player, 20_00)
    assert bal(cb.result.balances) == (-20_00, 0, 0, 0)
    r = await reverse(client, w.withdrawal_id)
    assert bal(r.result.balances) == (30_00, 0, 0, 30_00)


# -- Chargeback --------------------------------------------------------------------------------


async def test_chargeback_debt_blocks_until_covered(client: Client, player: str,
                                                    ledger_clean: None) -> None:
    """A chargeback may take cash below zero; the wallet then refuses bets and withdrawals."""
    await client.funded(player, 50)
    await client.bet(player, 30)
    cb = await chargeback(client, player, 50)
    assert bal(cb.result.balances) == (-30, 0, 0, 0)
    await expect_error(client.bet(player, 1), grpc.StatusCode.FAILED_PRECONDITION,
                       "WALLET_BLOCKED")
    await expect_error(reserve(client, player, 1), grpc.StatusCode.FAILED_PRECONDITION,
                       "WALLET_BLOCKED")
    b = await client.balance(player)
    assert bal(b) == (-30, 0, 0, 0)
    d = await client.deposit(player, 40)
    assert bal(d.result.balances) == (10, 0, 0, 10)
    r = await client.bet(player, 5)
    assert bal(r.result.balances) == (5, 0, 0, 5)


# -- Adjust ------------------------------------------------------------------------------------


async def test_adjust_cash_and_bonus(client: Client, player: str, ledger_clean: None) -> None:
    """Adjust credits/debits cash, changes the active bonus's balance, and records the reason."""
    await client.funded(player, 100)
    up = await adjust(client, player, pb.BUCKET_CASH, 25, reason="goodwill TICKET-1")
    assert bal(up.result.balances) == (125, 0, 0, 125)
    down = await adjust(client, player, pb.BUCKET_CASH, -10, reason="duplicate credit")
    assert bal(down.result.balances) == (115, 0, 0, 115)
    g = await client.grant(player, 100, wagering=1000)
    bu = await adjust(client, player, pb.BUCKET_BONUS, 20, reason="bonus fix")
    assert bal(bu.result.balances) == (115, 120, 0, 235)
    assert (await bonuses(client, player))[g.bonus_id].balance == 120
    bd = await adjust(client, player, pb.BUCKET_BONUS, -50, reason="bonus fix back")
    assert bal(bd.result.balances) == (115, 70, 0, 185)
    assert (await bonuses(client, player))[g.bonus_id].balance == 70
    tx = await get_tx(client, up.result.transaction_id)
    assert tx.details["reason"] == "goodwill TICKET-1"
    assert (tx.kind, tx.caller) == ("adjust", SERVICES["support"])


# -- Journal reads -----------------------------------------------------------------------------


async def test_get_transaction_by_key_of_another_caller(client: Client, player: str,
                                                        ledger_clean: None) -> None:
    """Support finds a game bet by its idempotency key with caller=game-service."""
    await client.funded(player, 100)
    bet_key = key("bet")
    r = await client.bet(player, 10, idem=bet_key, round_id="rk")
    resp = await client.call("GetTransaction", pb.GetTransactionRequest(
        idempotency_key=bet_key, caller="game-service"), "support")
    tx = resp.transaction
    assert tx.transaction_id == r.result.transaction_id
    assert (tx.caller, tx.idempotency_key, tx.kind, tx.status) == (
        "game-service", bet_key, "bet", "ok")
    assert tx.details["round_id"] == "rk"
    assert bal(tx.balances) == (90, 0, 0, 90)


async def test_list_transactions_paging_is_stable(client: Client, player: str,
                                                  ledger_clean: None) -> None:
    """Pages of 2, newest first, give every entry exactly once even with inserts between pages."""
    await client.funded(player, 100)  # open + deposit
    for _ in range(3):
        await client.bet(player, 1)
    everything = await list_tx(client, player)
    ids = [t.transaction_id for t in everything.transactions]
    assert len(ids) == 5
    assert everything.next_page_token == ""
    assert [int(i) for i in ids] == sorted((int(i) for i in ids), reverse=True)
    assert [t.kind for t in everything.transactions] == ["bet", "bet", "bet", "deposit", "open"]

    seen: list[str] = []
    page = await list_tx(client, player, page_size=2)
    pages = 1
    while True:
        assert len(page.transactions) <= 2
        seen.extend(t.transaction_id for t in page.transactions)
        if not page.next_page_token:
            break
        await client.bet(player, 1)  # new entry between pages: must not shift the listing
        page = await list_tx(client, player, page_size=2, token=page.next_page_token)
        pages += 1
    assert seen == ids
    assert pages == 3


async def test_page_token_of_another_wallet_refused(client: Client, player: str,
                                                    ledger_clean: None) -> None:
    """A page_token from another wallet's listing is INVALID_ARGUMENT, field page_token."""
    await client.funded(player, 100)
    for _ in range(2):
        await client.bet(player, 1)
    other = f"{player}-other"
    await client.funded(other, 100)
    page = await list_tx(client, player, page_size=2)
    assert page.next_page_token
    info = await expect_error(list_tx(client, other, page_size=2, token=page.next_page_token),
                              grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    assert info.metadata["field"] == "page_token"


# -- Balance limit -----------------------------------------------------------------------------


async def test_balance_limit(client: Client, player: str, ledger_clean: None) -> None:
    """Cash may reach exactly 2**62 minor units; one more is BALANCE_LIMIT_EXCEEDED."""
    limit = 2**62
    step = 10**15  # USDT's largest single amount
    await client.funded(player, 0, "USDT")
    full, rest = divmod(limit, step)
    # 4,611 deposits: sent 64 at a time, so group commit takes them in batches (one at a
    # time, this test took 19 s of the suite's time).
    for start in range(0, full, 64):
        await asyncio.gather(*(client.deposit(player, step, "USDT")
                               for _ in range(min(64, full - start))))
    last = await client.deposit(player, rest, "USDT")
    assert last.result.balances.cash == limit
    await expect_error(client.deposit(player, 1, "USDT"), grpc.StatusCode.FAILED_PRECONDITION,
                       "BALANCE_LIMIT_EXCEEDED")
    assert (await client.balance(player, "USDT")).cash == limit


