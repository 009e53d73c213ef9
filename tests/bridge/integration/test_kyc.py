"""Identity verification (KYC) through the real bridge and the simulated Onfido
(docs/COMPLIANCE.md): a check started and answered by signed webhooks, forged, duplicated
and stale webhooks changing nothing, and the gates: withdrawals need a verified player,
deposits past the threshold too, and a verified player under age or from a blocked country
may not deposit."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import orjson
from prometheus_client import generate_latest

from gateway_bridge.payments import gauges
from gateway_bridge.server import Running
from tests.bridge.clis import walletctl
from tests.bridge.conftest import BridgeFactory, Cashier, wallet_away
from tests.helpers import Client, error_info, wait_for
from tests.wallet.integration.test_metrics_and_probes import sample

# A player who turned 19 a month ago: of age in most countries, not in one asking for 21.
_TODAY = datetime.now(UTC).date()
NINETEEN = (_TODAY - timedelta(days=30)).replace(year=(_TODAY - timedelta(days=30)).year - 19,
                                                day=1)


def kyc_bridge(make_bridge: BridgeFactory, sim: str,
               **extra: str) -> AbstractAsyncContextManager[Running]:
    return make_bridge(BRIDGE_KYC_ONFIDO_BASE_URL=f"{sim}/onfido",
                       BRIDGE_KYC_THRESHOLD_CURRENCY="USD",
                       BRIDGE_KYC_DEPOSIT_THRESHOLD_MINOR="10000", **extra)


async def start(cashier: Cashier, player: str) -> dict[str, Any]:
    status, body = await cashier.request("POST", f"/v1/players/{player}/kyc", body={
        "first_name": "Ada", "last_name": "Lovelace"})
    assert status == 202, body
    return body


async def state(cashier: Cashier, player: str) -> dict[str, Any]:
    status, body = await cashier.request("GET", f"/v1/players/{player}/kyc")
    assert status == 200, body
    return body


async def complete(cashier: Cashier, check_id: str, result: str, **extra: Any) -> None:
    await cashier.sim(f"/_sim/kyc/checks/{check_id}/complete", {"result": result, **extra})
    await cashier.flush()


async def reached(cashier: Cashier, player: str, wanted: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def there() -> bool:
        nonlocal seen
        seen = await state(cashier, player)
        return bool(seen["state"] == wanted)
    await wait_for(there)
    return seen


async def withdraw(cashier: Cashier, player: str, key: str) -> tuple[int, dict[str, Any]]:
    return await cashier.request("POST", "/v1/withdrawals", body={
        "player_id": player, "amount_minor": 10_00, "currency": "USD", "psp": "stripe",
        "method": "bank_transfer", "destination": "acct_test_1"},
        headers={"Idempotency-Key": key})


async def deposit(cashier: Cashier, player: str, amount_minor: int,
                  key: str) -> tuple[int, dict[str, Any]]:
    return await cashier.request("POST", "/v1/deposits", body={
        "player_id": player, "amount_minor": amount_minor, "currency": "USD",
        "psp": "stripe", "method": "card"}, headers={"Idempotency-Key": key})


async def test_a_verified_player_may_withdraw_and_an_unverified_one_may_not(
        make_bridge: BridgeFactory, sim: str, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection) -> None:
    await client.funded(player, 50_00)
    async with kyc_bridge(make_bridge, sim):
        status, body = await withdraw(cashier, player, f"w0-{player}")
        assert (status, body["error"]["code"], body["error"]["field"]) == (
            422, "KYC_REQUIRED", "player_id"), body
        assert await bridge_conn.fetchval(
            "SELECT count(*) FROM bridge.payments WHERE player_id = $1", player) == 0
        started = await start(cashier, player)
        assert started["state"] == "pending" and started["check_id"]
        again = await start(cashier, player)  # idempotent while the check runs
        assert again["check_id"] == started["check_id"]
        await complete(cashier, started["check_id"], "clear")
        verified = await reached(cashier, player, "verified")
        assert (verified["country"], verified["birth_date"]) == ("GBR", "1990-01-01")
        assert [h["to_state"] for h in verified["history"]] == ["pending", "verified"]
        status, body = await withdraw(cashier, player, f"w1-{player}")
        assert status == 202, body


async def test_forged_duplicated_and_stale_webhooks_change_nothing(
        make_bridge: BridgeFactory, sim: str, cashier: Cashier, player: str) -> None:
    async with kyc_bridge(make_bridge, sim):
        first = await start(cashier, player)
        await complete(cashier, first["check_id"], "clear", forge=True)
        deliveries = (await cashier.sim_get("/_sim/deliveries?psp=onfido"))["deliveries"]
        assert deliveries[-1]["status"] == 401, deliveries[-1]
        assert (await state(cashier, player))["state"] == "pending"
        # A rejection, delivered twice: applied once.
        await cashier.knobs(duplicate_count=1)
        try:
            await complete(cashier, first["check_id"], "consider")
        finally:
            await cashier.knobs(duplicate_count=0)
        rejected = await reached(cashier, player, "rejected")
        assert [h["to_state"] for h in rejected["history"]] == ["pending", "rejected"]
        # A re-check; then the first check answers again (a late or replayed webhook): it is
        # not the player's current check, so nothing moves.
        second = await start(cashier, player)
        assert second["check_id"] != first["check_id"] and second["state"] == "pending"
        await complete(cashier, first["check_id"], "clear")
        assert (await state(cashier, player))["state"] == "pending"
        await complete(cashier, second["check_id"], "clear")
        await reached(cashier, player, "verified")


async def test_deposits_past_the_threshold_need_verification_and_age_and_country_count(
        make_bridge: BridgeFactory, sim: str, cashier: Cashier, client: Client,
        player: str) -> None:
    await client.open(player)
    async with kyc_bridge(make_bridge, sim, BRIDGE_KYC_BLOCKED_COUNTRIES="PRK",
                          BRIDGE_KYC_MIN_AGE_BY_COUNTRY='{"USA": 21}'):
        status, body = await deposit(cashier, player, 60_00, f"d1-{player}")
        assert status == 201, body
        status, body = await deposit(cashier, player, 50_00, f"d2-{player}")
        assert (status, body["error"]["code"]) == (422, "KYC_REQUIRED"), body
        check = await start(cashier, player)
        await complete(cashier, check["check_id"], "clear", dob=NINETEEN.isoformat(), country="USA")
        await reached(cashier, player, "verified")
        status, body = await deposit(cashier, player, 50_00, f"d3-{player}")
        assert (status, body["error"]["code"]) == (422, "UNDERAGE"), body
        assert "minimum age" in body["error"]["message"], body
    # New settings: a bridge starting reassesses verified players, and the wallet's
    # restriction follows (COUNTRY_BLOCKED, then lifted: 19 is of age by default).
    async with kyc_bridge(make_bridge, sim, BRIDGE_KYC_BLOCKED_COUNTRIES="USA"):
        await refused_with(cashier, player, "COUNTRY_BLOCKED")
    async with kyc_bridge(make_bridge, sim):
        answers: list[tuple[int, dict[str, Any]]] = []

        async def accepted() -> bool:
            answers.append(await deposit(cashier, player, 50_00, f"d5-{player}"))
            return answers[-1][0] == 201
        await wait_for(accepted)


async def refused_with(cashier: Cashier, player: str, code: str) -> None:
    seen: list[dict[str, Any]] = []

    async def refused() -> bool:
        status, body = await deposit(cashier, player, 50_00, f"d4-{player}")
        seen.append(body)
        return status == 422 and body["error"]["code"] == code
    await wait_for(refused)


async def test_an_underage_or_blocked_player_may_not_bet_in_the_wallet(
        make_bridge: BridgeFactory, sim: str, cashier: Cashier, client: Client,
        player: str) -> None:
    """The wallet itself refuses their bets (the cashier sees no bets), in every currency,
    while a round in play still settles; an age restriction ends on the birthday."""
    blocked = f"{player}-b"
    await client.funded(player, 50_00)
    await client.bet(player, 5_00, round_id="open")
    async with kyc_bridge(make_bridge, sim, BRIDGE_KYC_BLOCKED_COUNTRIES="PRK",
                          BRIDGE_KYC_MIN_AGE_BY_COUNTRY='{"USA": 21}'):
        check = await start(cashier, player)
        await complete(cashier, check["check_id"], "clear", dob=NINETEEN.isoformat(), country="USA")
        await reached(cashier, player, "verified")
        # The blocked player has no wallet yet: the bridge opens one to carry it.
        check = await start(cashier, blocked)
        await complete(cashier, check["check_id"], "clear", dob="1990-01-01", country="PRK")
        await reached(cashier, blocked, "verified")
    code, reason, meta = await refusal(client.bet(player, 1_00, round_id="new"))
    assert (code, reason, meta["until"]) == (
        grpc.StatusCode.FAILED_PRECONDITION, "UNDERAGE",
        f"{NINETEEN.replace(year=NINETEEN.year + 21).isoformat()}T12:00:00+00:00")
    await client.win(player, 7_00, round_id="open")
    await client.open(player, "EUR")
    assert (await refusal(client.deposit(player, 1_00, "EUR")))[1] == "UNDERAGE"
    # WALLET_NOT_FOUND otherwise.
    assert (await refusal(client.deposit(blocked, 10_00)))[1] == "COUNTRY_BLOCKED"
    assert (await refusal(client.bet(blocked, 1_00, round_id="r")))[1] == "COUNTRY_BLOCKED"


async def verify_in_blocked_country(cashier: Cashier, player: str) -> None:
    check = await start(cashier, player)
    await complete(cashier, check["check_id"], "clear", dob="1990-01-01", country="PRK")
    await reached(cashier, player, "verified")


async def until_country_blocked(client: Client, player: str) -> None:
    """Until the wallet refuses the player's bets with COUNTRY_BLOCKED."""
    async def restricted() -> bool:
        try:
            await client.bet(player, 1_00, round_id="after")
        except grpc.aio.AioRpcError as err:
            return error_info(err).reason == "COUNTRY_BLOCKED"
        return False
    await wait_for(restricted)


async def test_a_restriction_the_wallet_missed_is_sent_by_the_poller(
        make_bridge: BridgeFactory, sim: str, cashier: Cashier, client: Client,
        bridge_conn: asyncpg.Connection, player: str) -> None:
    await client.funded(player, 20_00)
    async with kyc_bridge(make_bridge, sim, BRIDGE_KYC_BLOCKED_COUNTRIES="PRK",
                          BRIDGE_KYC_POLL_INTERVAL_MS="100") as bridge:
        async with wallet_away(bridge.services.kyc, timeout_ms=300):
            await verify_in_blocked_country(cashier, player)
            unsent = await bridge_conn.fetchval(
                "SELECT restriction_version - restriction_sent_version FROM bridge.kyc "
                "WHERE player_id = $1", player)
            assert unsent == 1
            await gauges.refresh(bridge_conn)  # what KycRestrictionUnsent watches
            assert sample(generate_latest().decode(), "bridge_kyc_restrictions_unsent") >= 1
            await client.bet(player, 1_00, round_id="before")  # the wallet does not know
        await until_country_blocked(client, player)


async def test_the_poller_outlives_an_unexpected_error(
        make_bridge: BridgeFactory, sim: str, cashier: Cashier, client: Client,
        player: str) -> None:
    """A bug met by one poll pass is logged; the next pass still sends what is due."""
    await client.funded(player, 20_00)
    async with kyc_bridge(make_bridge, sim, BRIDGE_KYC_BLOCKED_COUNTRIES="PRK",
                          BRIDGE_KYC_POLL_INTERVAL_MS="100") as bridge:
        kyc = bridge.services.kyc
        real_poll = kyc.poll_late
        failures: list[str] = []

        async def broken_poll() -> Any:
            if not failures:
                failures.append("poll")
                raise RuntimeError("a bug in one pass")
            return await real_poll()

        async def broken_pass_ran() -> bool:
            return failures == ["poll"]

        async with wallet_away(bridge.services.kyc, timeout_ms=300):
            await verify_in_blocked_country(cashier, player)
            kyc.poll_late = broken_poll  # type: ignore[method-assign]
            # The wallet stays away until the broken pass has run, so no pass before it can
            # send the restriction: only a pass after the error can.
            await wait_for(broken_pass_ran)
        await until_country_blocked(client, player)


async def refusal(call: Any) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        info = error_info(err)
        return err.code(), info.reason, dict(info.metadata)
    raise AssertionError("the wallet took it")


async def test_kyc_is_off_without_a_provider(bridge: object, cashier: Cashier,
                                             player: str) -> None:
    status, body = await cashier.request("GET", f"/v1/players/{player}/kyc")
    assert (status, body["error"]["code"]) == (422, "KYC_NOT_ENABLED"), body


async def test_support_lets_a_rejected_players_own_cash_leave_after_review(
        make_bridge: BridgeFactory, sim: str, cashier: Cashier, client: Client, player: str,
        bridge_db: str) -> None:
    await client.funded(player, 50_00)
    async with kyc_bridge(make_bridge, sim):
        check = await start(cashier, player)
        await complete(cashier, check["check_id"], "consider")
        await reached(cashier, player, "rejected")
        status, body = await withdraw(cashier, player, f"rw0-{player}")
        assert (status, body["error"]["code"]) == (422, "KYC_REQUIRED"), body
        status, body = await deposit(cashier, player, 1_00, f"rd0-{player}")
        assert (status, body["error"]["code"]) == (422, "KYC_REJECTED"), body
        env = {"DATABASE_URL": bridge_db}
        missing = await asyncio.to_thread(walletctl, env, "kyc", "allow-cash-out", player)
        assert missing.returncode == 2 and "--reason" in missing.stderr
        allowed = await asyncio.to_thread(walletctl, env, "kyc", "allow-cash-out", player,
                                          "--reason", "documents re-checked by phone",
                                          "--actor", "ana")
        assert allowed.returncode == 0, allowed.stderr
        shown = orjson.loads(allowed.stdout)
        assert shown["cash_out_allowed"] is True
        assert shown["history"][-1]["actor"] == "ana" and shown["history"][-1]["source"] == \
            "support"
        status, body = await withdraw(cashier, player, f"rw1-{player}")
        assert status == 202, body
        status, body = await deposit(cashier, player, 1_00, f"rd1-{player}")
        assert (status, body["error"]["code"]) == (422, "KYC_REJECTED"), body
        # Only a rejected player's cash-out is support's to decide.
        other = await asyncio.to_thread(walletctl, env, "kyc", "allow-cash-out", "p-nobody",
                                        "--reason", "x")
        assert other.returncode == 1 and "KYC_NOT_REJECTED" in other.stderr


async def test_a_check_whose_webhook_never_comes_is_polled(
        make_bridge: BridgeFactory, sim: str, cashier: Cashier, player: str) -> None:
    async with kyc_bridge(make_bridge, sim, BRIDGE_KYC_LATE_AFTER_MS="300",
                          BRIDGE_KYC_POLL_INTERVAL_MS="100"):
        check = await start(cashier, player)
        await complete(cashier, check["check_id"], "clear", deliver=False)
        verified = await reached(cashier, player, "verified")
        assert verified["history"][-1]["source"] == "poll", verified["history"]
