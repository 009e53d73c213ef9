"""The cashier and the player's responsible-gambling limits (docs/COMPLIANCE.md): a deposit
the wallet would refuse at credit time is refused before anything is stored or sent to a
PSP, with the reason the wallet gives."""

from __future__ import annotations

from typing import Any

import asyncpg
from wallet.v1 import wallet_service_pb2 as pb

from tests.bridge.conftest import Cashier
from tests.helpers import Client, key, wait_for


async def deposit(cashier: Cashier, player: str, amount_minor: int, *,
                  idem: str) -> tuple[int, dict[str, Any]]:
    return await cashier.request("POST", "/v1/deposits", body={
        "player_id": player, "amount_minor": amount_minor, "currency": "USD", "psp": "stripe",
        "method": "card"}, headers={"Idempotency-Key": idem})


async def test_a_deposit_over_the_limit_or_during_a_break_never_reaches_a_psp(
        bridge: object, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection) -> None:
    await client.open(player)
    await client.call("SetLimits", pb.SetLimitsRequest(
        player_id=player, currency="USD", idempotency_key=key("lim"), changes=[
            pb.LimitChange(kind=pb.LIMIT_KIND_DEPOSIT, period=pb.LIMIT_PERIOD_DAY,
                           amount=50_00)]), "limits")
    status, body = await deposit(cashier, player, 60_00, idem=f"over-{player}")
    assert (status, body["error"]["code"], body["error"]["field"]) == (
        422, "LIMIT_EXCEEDED", "amount_minor"), body
    assert "deposit limit per day (5000 left)" in body["error"]["message"]
    status, ok = await deposit(cashier, player, 50_00, idem=f"within-{player}")
    assert status == 201, ok
    await client.call("Exclude", pb.ExcludeRequest(
        player_id=player, currency="USD", kind=pb.BREAK_KIND_TIMEOUT, duration_s=86_400,
        idempotency_key=key("ex")), "limits")
    status, body = await deposit(cashier, player, 1_00, idem=f"break-{player}")
    assert (status, body["error"]["code"], body["error"]["field"]) == (
        422, "TIMED_OUT", "player_id"), body
    # A currency the player has no wallet in yet is under the break too.
    status, body = await cashier.request("POST", "/v1/deposits", body={
        "player_id": player, "amount_minor": 1_00, "currency": "EUR", "psp": "stripe",
        "method": "card"}, headers={"Idempotency-Key": f"eur-{player}"})
    assert (status, body["error"]["code"]) == (422, "TIMED_OUT"), body
    # A retry of the payment stored before the break keeps it.
    status, again = await deposit(cashier, player, 50_00, idem=f"within-{player}")
    assert (status, again["id"]) == (200, ok["id"])
    stored = await bridge_conn.fetchval(
        "SELECT count(*) FROM bridge.payments WHERE player_id = $1", player)
    assert stored == 1


async def test_a_deposit_the_wallet_refuses_at_credit_time_is_refunded(
        bridge: object, cashier: Cashier, client: Client, player: str) -> None:
    """The player lowers their limit after the cashier's check: the capture is not credited,
    the deposit fails with the wallet's reason, and the money goes back at the PSP."""
    await client.open(player)
    status, created = await deposit(cashier, player, 40_00, idem=f"late-{player}")
    assert status == 201, created
    await client.call("SetLimits", pb.SetLimitsRequest(
        player_id=player, currency="USD", idempotency_key=key("lim"), changes=[
            pb.LimitChange(kind=pb.LIMIT_KIND_DEPOSIT, period=pb.LIMIT_PERIOD_MONTH,
                           amount=10_00)]), "limits")
    await cashier.complete_deposit(created)
    failed = await cashier.wait_state(created["id"], "failed")
    assert failed["refusal"]["reason"] == "LIMIT_EXCEEDED", failed
    seen: dict[str, Any] = {}

    async def refunded() -> bool:
        nonlocal seen
        seen = await cashier.payment(created["id"])
        return bool(seen.get("refunds")) and seen["refunds"][0]["state"] == "refunded"
    await wait_for(refunded, timeout_s=15)
    assert seen["refunds"][0]["psp_reference"].startswith("pi_")
    assert seen["attention"] is None and seen["settled_minor"] == 0
    assert (await client.balance(player)).cash == 0


async def test_a_restricted_player_is_refused_and_a_late_capture_refunded(
        bridge: object, cashier: Cashier, client: Client, player: str) -> None:
    """KYC put a restriction on the player after the deposit was sent to the PSP: the
    capture is refunded like a limit's refusal; a new deposit is refused at the cashier."""
    await client.open(player)
    status, created = await deposit(cashier, player, 40_00, idem=f"late-{player}")
    assert status == 201, created
    await client.call("Restrict", pb.RestrictRequest(
        player_id=player, currency="USD", reason="COUNTRY_BLOCKED",
        idempotency_key=key("re")), "compliance")
    status, body = await deposit(cashier, player, 1_00, idem=f"new-{player}")
    assert (status, body["error"]["code"], body["error"]["field"]) == (
        422, "COUNTRY_BLOCKED", "player_id"), body
    assert "until the operator lifts it" in body["error"]["message"]
    await cashier.complete_deposit(created)
    failed = await cashier.wait_state(created["id"], "failed")
    assert failed["refusal"]["reason"] == "COUNTRY_BLOCKED", failed

    async def refunded() -> bool:
        seen = await cashier.payment(created["id"])
        return bool(seen.get("refunds")) and seen["refunds"][0]["state"] == "refunded"
    await wait_for(refunded, timeout_s=15)
    assert (await client.balance(player)).cash == 0
