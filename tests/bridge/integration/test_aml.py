"""Anti-money-laundering monitoring through the real bridge, wallet and simulator
(docs/COMPLIANCE.md): hits open cases, a case of a holding rule keeps the player's
withdrawals reserved until an analyst clears it, and reporting writes the
suspicious-activity record with the wallet's journal ids."""

from __future__ import annotations

import asyncio
import csv
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from prometheus_client import generate_latest

from gateway_bridge.payments import gauges
from gateway_bridge.server import Running
from tests.bridge.clis import walletctl
from tests.bridge.conftest import BridgeFactory, Cashier
from tests.helpers import SERVICES, TOKENS, Client, wait_for
from tests.wallet.integration.test_metrics_and_probes import sample
from wallet_core.server import Running as WalletRunning


def aml_bridge(make_bridge: BridgeFactory) -> AbstractAsyncContextManager[Running]:
    return make_bridge(BRIDGE_AML_LARGE_DEPOSIT_MINOR='{"USD": 100000}')


async def deposit(cashier: Cashier, player: str, amount_minor: int, key: str) -> dict[str, Any]:
    status, body = await cashier.request("POST", "/v1/deposits", body={
        "player_id": player, "amount_minor": amount_minor, "currency": "USD",
        "psp": "stripe", "method": "card"}, headers={"Idempotency-Key": key})
    assert status == 201, body
    return body


async def cases(conn: asyncpg.Connection, player: str) -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT id, rule, state, holds_withdrawals, payment_ids FROM "
                            "bridge.aml_cases WHERE player_id = $1 ORDER BY id", player))


async def test_structuring_holds_withdrawals_until_an_analyst_clears_the_case(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, bridge_db: str, server: WalletRunning,
        tmp_path: Path) -> None:
    await client.funded(player, 100_00)
    async with aml_bridge(make_bridge):
        big = await deposit(cashier, player, 1_000_00, f"big-{player}")
        [large] = await cases(bridge_conn, player)
        assert (large["rule"], large["holds_withdrawals"]) == ("AML_LARGE_DEPOSIT", False)
        assert list(large["payment_ids"]) == [big["id"]]
        near = [await deposit(cashier, player, 950_00 + n, f"near-{player}-{n}")
                for n in range(3)]
        found = {r["rule"]: r for r in await cases(bridge_conn, player)}
        held_case = found["AML_STRUCTURING"]
        assert held_case["holds_withdrawals"] and held_case["state"] == "open"
        assert list(held_case["payment_ids"]) == [n["id"] for n in near]
        status, wd = await cashier.request("POST", "/v1/withdrawals", body={
            "player_id": player, "amount_minor": 20_00, "currency": "USD", "psp": "stripe",
            "method": "bank_transfer", "destination": "acct_test_1"},
            headers={"Idempotency-Key": f"wd-{player}"})
        assert status == 202, wd
        assert wd["state"] == "reserved", wd
        assert wd["attention"] == f"aml hold: case {held_case['id']}", wd["attention"]
        assert (await client.balance(player)).reserved == 20_00

        env = {"DATABASE_URL": bridge_db}
        missing = await asyncio.to_thread(walletctl, env, "aml", "clear",
                                          str(held_case["id"]))
        assert missing.returncode == 2 and "--note" in missing.stderr
        listed = await asyncio.to_thread(walletctl, env, "aml", "list")
        assert str(held_case["id"]) in listed.stdout
        cleared = await asyncio.to_thread(walletctl, env, "aml", "clear", str(held_case["id"]),
                                          "--note", "salary payments, documented",
                                          "--actor", "analyst")
        assert cleared.returncode == 0, cleared.stderr
        assert wd["id"] in cleared.stdout
        await cashier.wait_state(wd["id"], "payout_pending")
        again = await asyncio.to_thread(walletctl, env, "aml", "clear", str(held_case["id"]),
                                        "--note", "twice")
        assert again.returncode == 1 and "AML_CASE_STATE" in again.stderr

        report_env = {**env, "WALLETCTL_WALLET_ADDR": f"127.0.0.1:{server.port}",
                      "WALLETCTL_WALLET_TOKEN": TOKENS["read"]}
        reported = await asyncio.to_thread(
            walletctl, report_env, "aml", "report", str(large["id"]), "--narrative",
            "one deposit of 1,000 USD from a new card", "--out", str(tmp_path),
            "--wallet-caller", SERVICES["payments"], "--actor", "analyst")
        assert reported.returncode == 0, reported.stderr
    record = orjson.loads((tmp_path / f"sar-{large['id']}.json").read_bytes())
    assert record["player_id"] == player and record["rule"] == "AML_LARGE_DEPOSIT"
    assert record["narrative"] == "one deposit of 1,000 USD from a new card"
    assert [t["id"] for t in record["transactions"]] == [big["id"]]
    assert record["transactions"][0]["wallet_key"] == f"bridge:deposit:{big['id']}"
    rows = list(csv.DictReader((tmp_path / f"sar-{large['id']}.csv").open()))
    assert [r["id"] for r in rows] == [big["id"]] and rows[0]["rule"] == "AML_LARGE_DEPOSIT"
    history = await bridge_conn.fetch(
        "SELECT to_state, actor FROM bridge.aml_case_history WHERE case_id = $1 ORDER BY id",
        held_case["id"])
    assert [(h["to_state"], h["actor"]) for h in history] == [("open", "rules"),
                                                              ("cleared", "analyst")]


async def test_a_reported_cases_journal_ids_come_from_the_wallet(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, bridge_db: str, server: WalletRunning,
        tmp_path: Path) -> None:
    await client.open(player)
    async with aml_bridge(make_bridge):
        big = await deposit(cashier, player, 1_500_00, f"jbig-{player}")
        await cashier.complete_deposit(big)
        await cashier.wait_state(big["id"], "succeeded")
        [case] = await cases(bridge_conn, player)
        env = {"DATABASE_URL": bridge_db, "WALLETCTL_WALLET_ADDR": f"127.0.0.1:{server.port}",
               "WALLETCTL_WALLET_TOKEN": TOKENS["read"]}
        done = await asyncio.to_thread(
            walletctl, env, "aml", "report", str(case["id"]), "--narrative", "checked",
            "--out", str(tmp_path), "--wallet-caller", SERVICES["payments"])
        assert done.returncode == 0, done.stderr

    async def written() -> bool:
        return (tmp_path / f"sar-{case['id']}.json").exists()
    await wait_for(written)
    record = orjson.loads((tmp_path / f"sar-{case['id']}.json").read_bytes())
    [tx] = record["transactions"]
    assert tx["wallet_journal_id"], tx


async def test_a_withdrawal_after_little_play_opens_a_case_once(
        make_bridge: BridgeFactory, cashier: Cashier, client: Client, player: str,
        bridge_conn: asyncpg.Connection, bridge_db: str) -> None:
    """Deposits with bets below 30 % of them, then a withdrawal: the little-play rule opens a
    case (here a holding one). Cleared, the withdrawal is paid out, and being looked at again
    before that payout does not open another case. A player who played enough opens none."""
    played = f"{player}-played"
    await client.funded(player, 100_00)
    await client.bet(player, 29_00, round_id="r1")  # 29 % of the deposits
    await client.funded(played, 100_00)
    await client.bet(played, 30_00, round_id="r1")
    before = generate_latest().decode()
    async with make_bridge(BRIDGE_AML_HOLDING_RULES="AML_LITTLE_PLAY"):
        status, wd = await cashier.request("POST", "/v1/withdrawals", body={
            "player_id": player, "amount_minor": 20_00, "currency": "USD", "psp": "stripe",
            "method": "bank_transfer", "destination": "acct_test_1"},
            headers={"Idempotency-Key": f"lp-{player}"})
        assert status == 202, wd
        [case] = await cases(bridge_conn, player)
        assert (case["rule"], case["holds_withdrawals"]) == ("AML_LITTLE_PLAY", True)
        assert list(case["payment_ids"]) == [wd["id"]]
        assert wd["state"] == "reserved" and wd["attention"] == f"aml hold: case {case['id']}"
        # What the AmlCaseOpened and AmlHoldWaiting alerts watch.
        await gauges.refresh(bridge_conn)
        after = generate_latest().decode()
        assert sample(after, "bridge_aml_cases_opened_total", rule="AML_LITTLE_PLAY") - sample(
            before, "bridge_aml_cases_opened_total", rule="AML_LITTLE_PLAY") == 1
        assert sample(after, "bridge_aml_cases_open", rule="AML_LITTLE_PLAY",
                      holds="true") >= 1
        cleared = await asyncio.to_thread(walletctl, {"DATABASE_URL": bridge_db}, "aml",
                                          "clear", str(case["id"]), "--note", "known player")
        assert cleared.returncode == 0, cleared.stderr
        await cashier.wait_state(wd["id"], "payout_pending")
        assert [c["state"] for c in await cases(bridge_conn, player)] == ["cleared"]
        status, other = await cashier.request("POST", "/v1/withdrawals", body={
            "player_id": played, "amount_minor": 20_00, "currency": "USD", "psp": "stripe",
            "method": "bank_transfer", "destination": "acct_test_1"},
            headers={"Idempotency-Key": f"lp-{played}"})
        assert status == 202 and other["state"] == "payout_pending", other
        assert await cases(bridge_conn, played) == []
