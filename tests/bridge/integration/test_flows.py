"""End to end through real processes on loopback: cashier REST -> bridge -> PSP simulator ->
signed webhooks -> bridge inbox -> wallet gRPC, checked in the wallet's balances and ledger."""

from __future__ import annotations

import asyncpg
import pytest

from gateway_bridge.server import Running as BridgeRunning
from tests.bridge.conftest import Cashier
from tests.helpers import Client


@pytest.mark.parametrize("psp", ["stripe", "adyen", "nowpayments"])
async def test_deposit_through_each_psp_credits_the_wallet_once(
        psp: str, bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        ledger_clean: None) -> None:
    """Deposit created at the PSP, paid, webhook applied: cash credited exactly once."""
    created = await cashier.deposit(player, 25_00, psp=psp)
    assert created["state"] == "pending" and created["psp_reference"]
    instructions = created["instructions"]
    if psp == "nowpayments":
        assert instructions["pay_address"] and instructions["pay_amount"]
    else:
        assert instructions["checkout_url"].startswith("http")
    await cashier.complete_deposit(created)
    done = await cashier.wait_state(created["id"], "succeeded")
    assert done["settled_minor"] == 25_00
    assert [h["to_state"] for h in done["history"]][:2] == ["created", "pending"]
    await cashier.flush()
    assert (await client.balance(player)).cash == 25_00


async def test_cashier_retry_with_the_same_key_returns_the_same_payment(
        bridge: BridgeRunning, cashier: Cashier, player: str) -> None:
    """A repeated POST with one Idempotency-Key creates one payment at one PSP object."""
    first = await cashier.deposit(player, 10_00, key="same-key-1")
    again = await cashier.deposit(player, 10_00, key="same-key-1")
    assert again["id"] == first["id"] and again["psp_reference"] == first["psp_reference"]
    status, body = await cashier.request("POST", "/v1/deposits", body={
        "player_id": player, "amount_minor": 11_00, "currency": "USD", "psp": "stripe",
        "method": "card"}, headers={"Idempotency-Key": "same-key-1"})
    assert (status, body["error"]["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")


async def test_duplicate_webhooks_from_the_simulator_move_money_once(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """Every webhook delivered 5 times: one deposit, duplicates recorded once in the inbox."""
    await cashier.knobs(duplicate_count=4)
    created = await cashier.deposit(player, 40_00, psp="adyen")
    await cashier.complete_deposit(created)
    await cashier.wait_state(created["id"], "succeeded")
    await cashier.flush()
    assert (await client.balance(player)).cash == 40_00
    rows = await bridge_conn.fetchval(
        "SELECT count(*) FROM bridge.inbox WHERE payment_id = $1", created["id"])
    assert rows == 1


async def test_reordered_crypto_webhooks_end_in_the_right_state(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        ledger_clean: None) -> None:
    """NOWPayments 'finished' before 'confirming': succeeded, credited once, late event ignored."""
    await cashier.knobs(reorder=True)
    created = await cashier.deposit(player, 30_00, psp="nowpayments")
    await cashier.complete_deposit(created)
    await cashier.flush()
    done = await cashier.wait_state(created["id"], "succeeded")
    await cashier.flush()
    assert (await client.balance(player)).cash == 30_00
    notes = [h["note"] for h in (await cashier.payment(done["id"]))["history"]]
    assert any(n.startswith("ignored: late") for n in notes), notes


@pytest.mark.parametrize("psp", ["stripe", "adyen"])
async def test_chargeback_after_capture_debits_the_disputed_amount(
        psp: str, bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        ledger_clean: None) -> None:
    """A dispute on a credited deposit debits its amount once (the ordering cases are in
    test_webhooks_and_api)."""
    created = await cashier.deposit(player, 50_00, psp=psp)
    await cashier.complete_deposit(created)
    await cashier.wait_state(created["id"], "succeeded")
    await cashier.chargeback(created, amount_minor=20_00)
    await cashier.flush()
    done = await cashier.wait_state(created["id"], "charged_back")
    assert (done["settled_minor"], done["charged_back_minor"]) == (50_00, 20_00)
    assert (await client.balance(player)).cash == 30_00


async def test_amount_mismatch_is_flagged_and_not_credited(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        ledger_clean: None) -> None:
    """The PSP reports a different amount: payment `mismatch`, visible to support, no credit."""
    created = await cashier.deposit(player, 20_00, psp="adyen")
    await cashier.complete_deposit(created, amount_minor=2_00)
    done = await cashier.wait_state(created["id"], "mismatch")
    assert "differs" in done["attention"]
    assert (await client.balance(player)).cash == 0


async def test_partial_crypto_payment_is_held_for_support_by_default(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str) -> None:
    """partially_paid with the default policy: recorded, flagged, nothing credited."""
    created = await cashier.deposit(player, 40_00, psp="nowpayments")
    await cashier.complete_deposit(created, "partial", paid_fraction="0.5")
    done = await cashier.wait_state(created["id"], "partially_paid")
    assert done["attention"] and done["settled_minor"] == 0
    assert (await client.balance(player)).cash == 0


async def test_failed_and_expired_deposits_credit_nothing(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str) -> None:
    """Declined and expired payments end in their states; the wallet stays at zero."""
    failed = await cashier.deposit(player, 10_00, psp="adyen")
    expired = await cashier.deposit(player, 12_00, psp="stripe")
    await cashier.complete_deposit(failed, "failed")
    await cashier.complete_deposit(expired, "expired")
    await cashier.wait_state(failed["id"], "failed")
    await cashier.wait_state(expired["id"], "expired")
    assert (await client.balance(player)).cash == 0


@pytest.mark.parametrize("psp", ["stripe", "adyen", "nowpayments"])
async def test_withdrawal_paid_removes_the_reserve(
        psp: str, bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        ledger_clean: None) -> None:
    """Reserve -> payout requested -> paid: cash down by the amount, nothing left reserved."""
    await client.funded(player, 100_00)
    created = await cashier.withdraw(player, 60_00, psp=psp)
    assert created["state"] == "payout_pending" and created["withdrawal_id"]
    b = await client.balance(player)
    assert (b.cash, b.reserved) == (40_00, 60_00)
    await cashier.complete_payout(created, "paid")
    await cashier.wait_state(created["id"], "paid")
    b = await client.balance(player)
    assert (b.cash, b.reserved) == (40_00, 0)


async def test_withdrawal_declined_returns_the_funds(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        ledger_clean: None) -> None:
    """Payout failed at the PSP: the reserve goes back to cash."""
    await client.funded(player, 100_00)
    created = await cashier.withdraw(player, 70_00, psp="adyen")
    await cashier.complete_payout(created, "failed")
    await cashier.wait_state(created["id"], "payout_failed")
    b = await client.balance(player)
    assert (b.cash, b.reserved) == (100_00, 0)


async def test_payout_refused_at_request_time_releases_the_reserve(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        ledger_clean: None) -> None:
    """The PSP declines the payout request outright: cancelled through the inbox, cash back."""
    await client.funded(player, 50_00)
    await cashier.knobs(decline_rate=1)
    created = await cashier.withdraw(player, 50_00, psp="stripe")
    done = await cashier.wait_state(created["id"], "payout_failed")
    assert any("declined" in (h["psp_event_type"] or "") for h in done["history"])
    b = await client.balance(player)
    assert (b.cash, b.reserved) == (50_00, 0)


async def test_payout_reported_paid_then_failed_is_reversed(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        ledger_clean: None) -> None:
    """Stripe's paid-then-failed payout: committed, then reversed, the money back in cash."""
    await client.funded(player, 80_00)
    created = await cashier.withdraw(player, 30_00, psp="stripe")
    await cashier.complete_payout(created, "reversed")
    done = await cashier.wait_state(created["id"], "reversed")
    assert [h["to_state"] for h in done["history"]][-2:] == ["paid", "reversed"]
    b = await client.balance(player)
    assert (b.cash, b.reserved) == (80_00, 0)


async def test_withdrawal_beyond_the_balance_is_refused_and_replayed(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str) -> None:
    """Insufficient funds: 422 with the wallet's reason; the same key gets the same answer."""
    await client.funded(player, 10_00)
    for _ in range(2):
        body = await cashier.withdraw(player, 11_00, key="too-much", expect=(422,))
        assert body["error"]["code"] == "INSUFFICIENT_FUNDS"
    assert (await client.balance(player)).cash == 10_00


async def test_full_cycle_deposit_bet_win_withdrawal_keeps_the_ledger_clean(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        ledger_clean: None) -> None:
    """deposit -> bet -> win -> withdrawal through the simulator; `wallet-core check` clean."""
    deposit = await cashier.deposit(player, 100_00, psp="stripe")
    await cashier.complete_deposit(deposit)
    await cashier.wait_state(deposit["id"], "succeeded")
    await client.bet(player, 30_00, round_id="cycle")
    await client.win(player, 45_00, round_id="cycle")
    withdrawal = await cashier.withdraw(player, 115_00, psp="nowpayments")
    await cashier.complete_payout(withdrawal, "paid")
    await cashier.wait_state(withdrawal["id"], "paid")
    b = await client.balance(player)
    assert (b.cash, b.reserved) == (0, 0)


async def test_payout_destination_is_erased_once_the_psp_accepted_the_payout(
        bridge: BridgeRunning, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection) -> None:
    """The account/address a payout goes to is kept in clear only until the PSP has it; the
    stored request keeps a digest, so a cashier retry is still matched."""
    await client.funded(player, 20_00)
    created = await cashier.withdraw(player, 5_00, psp="stripe", key="dest-1")
    row = await bridge_conn.fetchrow("SELECT payout_destination, request FROM bridge.payments "
                                     "WHERE id = $1", created["id"])
    assert row["payout_destination"] is None
    assert "acct_test_123" not in row["request"]
    again = await cashier.withdraw(player, 5_00, psp="stripe", key="dest-1")
    assert again["id"] == created["id"]
