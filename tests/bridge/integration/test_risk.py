"""Risk screening end to end: the real cashier API over HTTP, the PSP simulator, the real
wallet over gRPC, and a tiny aiohttp server standing in for an external fraud scorer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web

from gateway_bridge.server import Running as BridgeRunning
from tests.bridge.clis import walletctl
from tests.bridge.conftest import OTHER_API_KEY, BridgeFactory, Cashier
from tests.helpers import Client

SUPPORT = {"Authorization": f"Bearer {OTHER_API_KEY}"}


async def sim_requests_for(cashier: Cashier, payment_id: str) -> list[dict[str, Any]]:
    async with cashier.http.get(cashier.sim_url + "/_sim/requests?limit=100000") as r:
        rows = (await r.json())["requests"]
    return [row for row in rows if payment_id in (row.get("idempotency_key") or "")]


async def decision(conn: asyncpg.Connection, payment_id: str) -> dict[str, Any]:
    row = await conn.fetchrow("SELECT * FROM bridge.risk_decisions WHERE payment_id = $1",
                              payment_id)
    assert row is not None
    stored = dict(row)
    for column in ("rules", "scoring"):
        if stored[column] is not None:
            stored[column] = orjson.loads(stored[column])
    return stored


async def deposit_status(cashier: Cashier, player: str, amount_minor: int, key: str,
                         **extra: Any) -> tuple[int, dict[str, Any]]:
    body = {"player_id": player, "amount_minor": amount_minor, "currency": "USD",
            "psp": "stripe", "method": "card", **extra}
    return await cashier.request("POST", "/v1/deposits", body=body,
                                 headers={"Idempotency-Key": key})


async def withdraw_status(cashier: Cashier, player: str, amount_minor: int, key: str,
                          **extra: Any) -> tuple[int, dict[str, Any]]:
    body = {"player_id": player, "amount_minor": amount_minor, "currency": "USD",
            "psp": "stripe", "method": "bank_transfer", "destination": "acct_test_123",
            **extra}
    return await cashier.request("POST", "/v1/withdrawals", body=body,
                                 headers={"Idempotency-Key": key})


async def test_velocity_breach_is_denied_and_reaches_neither_psp_nor_wallet(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection) -> None:
    """The third deposit within the window (deny above 2) is refused 422 RISK_DENIED with its
    reasons; the PSP saw no request for it, the wallet no change; a retry gets the same."""
    async with make_bridge(BRIDGE_RISK_PLAYER_COUNT_REVIEW_ABOVE="0",
                           BRIDGE_RISK_PLAYER_COUNT_DENY_ABOVE="2"):
        for n in range(2):
            status, _ = await deposit_status(cashier, player, 10_00, f"vel-{player}-{n}")
            assert status == 201
        before = await client.balance(player)
        status, body = await deposit_status(cashier, player, 10_00, f"vel-{player}-2",
                                            instrument_id="card_fp_abc")
        assert status == 422, body
        error = body["error"]
        assert error["code"] == "RISK_DENIED"
        assert [r["code"] for r in error["reasons"]] == ["VELOCITY_PLAYER_COUNT"]
        assert error["reasons"][0]["outcome"] == "deny" and error["reasons"][0]["message"]
        payment_id = error["payment_id"]
        assert await sim_requests_for(cashier, payment_id) == []
        after = await client.balance(player)
        assert (after.cash, after.reserved) == (before.cash, before.reserved)
        stored = await decision(bridge_conn, payment_id)
        assert stored["decision"] == "deny" and stored["instrument_id"] == "card_fp_abc"
        assert {r["code"] for r in stored["rules"]} >= {"VELOCITY_PLAYER_COUNT",
                                                         "INSTRUMENT_SHARED"}
        again_status, again = await deposit_status(cashier, player, 10_00,
                                                   f"vel-{player}-2",
                                                   instrument_id="card_fp_abc")
        assert again_status == 422 and again["error"]["payment_id"] == payment_id
        p = await cashier.payment(payment_id)
        assert p["state"] == "failed" and p["refusal"]["reason"] == "RISK_DENIED"
        assert p["risk"]["decision"] == "deny"


async def test_denied_withdrawal_reserves_nothing(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str) -> None:
    """An amount above the deny threshold: 422, no reserve in the wallet, nothing at the PSP."""
    await client.funded(player, 100_00)
    async with make_bridge(BRIDGE_RISK_AMOUNT_MINOR='{"USD": [0, 50_00]}'.replace("_", "")):
        status, body = await withdraw_status(cashier, player, 60_00, f"big-{player}")
        assert status == 422 and body["error"]["code"] == "RISK_DENIED", body
        assert body["error"]["reasons"][0]["code"] == "AMOUNT_THRESHOLD"
        assert await sim_requests_for(cashier, body["error"]["payment_id"]) == []
        b = await client.balance(player)
        assert (b.cash, b.reserved) == (100_00, 0)


REVIEW_ENV = {"BRIDGE_RISK_AMOUNT_MINOR": '{"USD": [5000, 0]}',
              "BRIDGE_RISK_SUPPORT_CLIENTS": "other"}


async def held_withdrawal(cashier: Cashier, client: Client, player: str) -> dict[str, Any]:
    await client.funded(player, 100_00)
    status, held = await withdraw_status(cashier, player, 60_00, f"rev-{player}")
    assert status == 202, held
    assert held["state"] == "reserved" and held["risk"]["decision"] == "review"
    assert held["risk"]["review"] == "pending"
    assert held["attention"].startswith("risk review: AMOUNT_THRESHOLD")
    b = await client.balance(player)
    assert (b.cash, b.reserved) == (40_00, 60_00)
    assert await sim_requests_for(cashier, held["id"]) == []
    return held


async def test_withdrawal_in_review_stays_reserved_until_approved_then_pays_out(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """Review: reserved, no payout (not even by the status sync); support approves over
    HTTP: the payout is requested and, once paid, the reserve is committed."""
    async with make_bridge(**REVIEW_ENV):
        held = await held_withdrawal(cashier, client, player)
        await asyncio.sleep(0.5)  # the status sync runs every 100 ms in tests
        assert (await cashier.payment(held["id"]))["state"] == "reserved"
        assert await sim_requests_for(cashier, held["id"]) == []
        # Reviews are for support's keys only.
        status, body = await cashier.request(
            "POST", f"/v1/risk/reviews/{held['id']}/approve",
            body={"actor": "mallory", "reason": "looks fine"})
        assert status == 403 and body["error"]["code"] == "RISK_SUPPORT_ONLY"
        # ...checked before the body, so such a key learns nothing of what is accepted.
        status, body = await cashier.request("POST", f"/v1/risk/reviews/{held['id']}/reject")
        assert status == 403 and body["error"]["code"] == "RISK_SUPPORT_ONLY"
        status, listing = await cashier.request("GET", "/v1/risk/reviews", headers=SUPPORT)
        assert status == 200 and held["id"] in {r["payment_id"] for r in listing["reviews"]}
        status, approved = await cashier.request(
            "POST", f"/v1/risk/reviews/{held['id']}/approve",
            body={"actor": "alice", "reason": "known player, KYC done"}, headers=SUPPORT)
        assert status == 200, approved
        assert approved["state"] == "payout_pending" and approved["attention"] is None
        assert len(await sim_requests_for(cashier, held["id"])) >= 1
        await cashier.complete_payout(approved, "paid")
        await cashier.wait_state(held["id"], "paid")
        b = await client.balance(player)
        assert (b.cash, b.reserved) == (40_00, 0)
        stored = await decision(bridge_conn, held["id"])
        assert stored["review_status"] == "approved"
        assert stored["reviewed_by"] == "other/alice"
        assert stored["review_reason"] == "known player, KYC done"
        status, body = await cashier.request(
            "POST", f"/v1/risk/reviews/{held['id']}/reject",
            body={"actor": "bob", "reason": "changed my mind"}, headers=SUPPORT)
        assert status == 409 and body["error"]["code"] == "RISK_NOT_IN_REVIEW"


async def test_rejected_withdrawal_releases_the_reserve(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """Support rejects (through the use case the CLI calls): the wallet cancels the reserve,
    the payment is rejected, nothing reached the PSP; the audit names who and why."""
    async with make_bridge(**REVIEW_ENV) as run:
        held = await held_withdrawal(cashier, client, player)
        assert run.reviews is not None
        rejected = await run.reviews.reject(held["id"], reason="stolen card suspected",
                                            actor="carol")
        assert rejected.state.value == "rejected"
        assert rejected.refusal is not None
        assert rejected.refusal.to_json() == {
            "reason": "RISK_REJECTED", "message": "rejected by support after a risk review"}
        b = await client.balance(player)
        assert (b.cash, b.reserved) == (100_00, 0)
        assert await sim_requests_for(cashier, held["id"]) == []
        again = await run.reviews.reject(held["id"], reason="repeat", actor="carol")
        assert again.state.value == "rejected"
        log = await run.reviews.log(held["id"])
        assert [(e["action"], e["actor"]) for e in log] == [("reject", "carol")] * 2
        status, body = await withdraw_status(cashier, player, 60_00, f"rev-{player}")
        assert status == 422 and body["error"]["code"] == "RISK_REJECTED"
        history = (await cashier.payment(held["id"]))["history"]
        assert any(h["source"] == "support" and "carol" in h["note"] for h in history)


async def test_deposit_in_review_is_held_until_approved(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str) -> None:
    """A deposit in review answers 202 and is not sent to the PSP; approval sends it."""
    async with make_bridge(**REVIEW_ENV) as run:
        status, held = await deposit_status(cashier, player, 60_00, f"drev-{player}")
        assert status == 202 and held["state"] == "created", held
        assert held["risk"]["reasons"][0]["code"] == "AMOUNT_THRESHOLD"
        assert await sim_requests_for(cashier, held["id"]) == []
        retry_status, retry = await deposit_status(cashier, player, 60_00, f"drev-{player}")
        assert retry_status == 200 and retry["state"] == "created"
        assert await sim_requests_for(cashier, held["id"]) == []
        assert run.reviews is not None
        sent = await run.reviews.approve(held["id"], reason="ok", actor="dave")
        assert sent.state.value == "pending" and sent.psp_reference
        p = await cashier.payment(held["id"])
        await cashier.complete_deposit(p, "succeeded")
        await cashier.wait_state(held["id"], "succeeded")
        assert (await client.balance(player)).cash == 60_00


# -- the external scorer ------------------------------------------------------------------

@pytest.fixture
async def scorer() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A tiny fraud-scoring API: behaviour set per test through the returned dict."""
    behaviour: dict[str, Any] = {"score": 10, "delay_s": 0.0, "status": 200, "seen": []}

    async def score(request: web.Request) -> web.Response:
        behaviour["seen"].append(await request.json())
        await asyncio.sleep(behaviour["delay_s"])
        if behaviour["status"] != 200:
            return web.json_response({"error": "boom"}, status=behaviour["status"])
        return web.json_response({"score": behaviour["score"]})

    app = web.Application()
    app.router.add_post("/score", score)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/score", behaviour
    await runner.cleanup()


@pytest.mark.parametrize(("setup", "status", "code", "outcome"), [
    ({"score": 10}, 201, "SCORE", "allow"),
    ({"score": 95}, 422, "SCORE", "deny"),
    ({"score": 70}, 202, "SCORE", "review"),
    ({"delay_s": 1.0}, 202, "SCORING_UNAVAILABLE", "review"),
    ({"status": 500}, 202, "SCORING_UNAVAILABLE", "review"),
], ids=["low-allow", "high-deny", "middle-review", "slow-timeout", "error"])
async def test_scoring_api(
        setup: dict[str, Any], status: int, code: str, outcome: str,
        scorer: tuple[str, dict[str, Any]], make_bridge: BridgeFactory, cashier: Cashier,
        player: str, bridge_conn: asyncpg.Connection) -> None:
    """The scorer's answer maps through the thresholds (review above 50, deny above 90);
    a timeout or an error gives the fail-safe default (review), and the failure is stored."""
    url, behaviour = scorer
    behaviour.update(setup)
    # An instrument of this test's own: one shared with the other cases' players would trip
    # the shared-instrument rule in whatever order the cases run.
    instrument = f"0x{player.removeprefix('p-')}"
    async with make_bridge(BRIDGE_RISK_SCORING_URL=url, BRIDGE_RISK_SCORING_TIMEOUT_MS="200"):
        got, body = await deposit_status(cashier, player, 10_00, f"score-{player}",
                                         instrument_id=instrument, country="US")
    assert got == status, body
    assert behaviour["seen"][0]["instrument_id"] == instrument
    assert behaviour["seen"][0]["country"] == "US"
    payment_id = body["error"]["payment_id"] if got == 422 else body["id"]
    stored = await decision(bridge_conn, payment_id)
    assert stored["decision"] == outcome
    rule = next(r for r in stored["rules"] if r["code"] in ("SCORE", "SCORING_UNAVAILABLE"))
    assert (rule["code"], rule["outcome"]) == (code, outcome)
    if code == "SCORING_UNAVAILABLE":
        assert "error" in stored["scoring"]
    else:
        assert stored["scoring"] == {"score": float(behaviour["score"])}


async def test_optional_fields_are_validated(bridge: BridgeRunning, cashier: Cashier,
                                             player: str) -> None:
    """instrument_id and country are checked and named like every other field."""
    for field, value in (("instrument_id", "bad id!"), ("instrument_id", 7),
                         ("country", "de"), ("country", "DEU")):
        status, body = await deposit_status(cashier, player, 10_00, f"f-{player}-{field}",
                                            **{field: value})
        assert status == 400 and body["error"]["field"] == field, body


def _cli(bridge_url: str, *args: str, key: str = OTHER_API_KEY) -> Any:
    return walletctl({"BRIDGE_URL": bridge_url, "BRIDGE_SUPPORT_API_KEY": key}, "risk", *args)


async def test_support_cli_lists_and_approves_a_held_withdrawal(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        ledger_clean: None) -> None:
    """`walletctl risk pending` lists the held withdrawal, `risk approve` sends the
    payout with the reason and actor audited; a key that is not support's exits 1."""
    async with make_bridge(**REVIEW_ENV):
        held = await held_withdrawal(cashier, client, player)
        listing = await asyncio.to_thread(_cli, cashier.url, "pending")
        assert listing.returncode == 0, listing.stderr
        assert held["id"] in listing.stdout
        refused = await asyncio.to_thread(_cli, cashier.url, "approve", held["id"],
                                          "--reason", "ok", key="not-a-support-key-0000")
        assert refused.returncode == 1
        approved = await asyncio.to_thread(_cli, cashier.url, "approve", held["id"],
                                           "--reason", "KYC checked", "--actor", "dave")
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert orjson.loads(approved.stdout)["state"] == "payout_pending"
        assert len(await sim_requests_for(cashier, held["id"])) >= 1
        assert OTHER_API_KEY not in approved.stdout + approved.stderr
