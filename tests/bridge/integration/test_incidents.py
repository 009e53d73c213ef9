"""Incident detection end to end: traffic through the cashier API, the PSP simulator (its
knobs make the trouble) and the real wallet, then the detector's evaluation on the bridge's
own tables. Each rule fires on the traffic it describes and stays quiet on normal traffic;
the lifecycle, manual settlement, walletctl and the report run against the same records.

The bridge here uses a database of its own (emptied before each test), so the rest of the
suite's payments never count towards a rule. Evaluations are triggered by the test
(`Detector.evaluate_once`), except in the test that proves the bridge runs them itself.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from wallet.v1 import wallet_service_pb2 as pb

from gateway_bridge import config as bridge_config
from gateway_bridge.http import webhooks
from gateway_bridge.incidents import probes, store
from gateway_bridge.server import Running as BridgeRunning
from gateway_bridge.server import migrate_database
from gateway_bridge.server import running as bridge_running
from service_kit.pg import init_json_codecs
from tests.bridge.conftest import Cashier, bridge_env
from tests.conftest import fresh_database
from tests.helpers import TOKENS, Client
from tests.helpers import key as new_key
from wallet_core.server import Running as WalletRunning

ROOT = Path(__file__).resolve().parents[3]
# Small thresholds, so a handful of payments is an incident.
RULES = {"BRIDGE_INCIDENT_DEPOSIT_FINISHED_MIN": "4",
         "BRIDGE_INCIDENT_DEPOSIT_FAILURE_PERCENT": "50",
         "BRIDGE_INCIDENT_WITHDRAWAL_SLA_S": "1",
         "BRIDGE_INCIDENT_CALLBACK_ERRORS_MIN": "3",
         "BRIDGE_INCIDENT_PROBE_FAILURES_MIN": "2",
         "BRIDGE_INCIDENT_INTERVAL_MS": "3600000",
         "BRIDGE_PROBE_INTERVAL_MS": "3600000"}
TABLES = ("bridge.incident_events, bridge.incident_payments, bridge.incidents, "
          "bridge.webhook_rejections_by_minute, bridge.webhook_rejections, bridge.psp_probes, "
          "bridge.inbox, bridge.payments")


@pytest.fixture(scope="session")
async def incident_db(base_database_url: str) -> AsyncIterator[str]:
    url = await fresh_database(
        base_database_url, os.environ.get("WALLET_TEST_DB", "wallet_test") + "_incidents")
    await migrate_database(url)
    yield url


@pytest.fixture
async def conn(incident_db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(incident_db)
    await init_json_codecs(c)
    await c.execute(f"TRUNCATE {TABLES} CASCADE")
    yield c
    await c.close()


Factory = Callable[..., AbstractAsyncContextManager[BridgeRunning]]


@pytest.fixture
def make(incident_db: str, conn: asyncpg.Connection, server: WalletRunning, sim: str,
         bridge_port: int) -> Factory:
    def factory(**overrides: str) -> AbstractAsyncContextManager[BridgeRunning]:
        env = bridge_env(database_url=incident_db, wallet_port=server.port, sim_url=sim,
                         bridge_port=bridge_port,
                         **{"BRIDGE_INCIDENTS_ENABLED": "false", **RULES, **overrides})
        return bridge_running(bridge_config.load(env), migrate_first=False)
    return factory


async def _evaluate(run: BridgeRunning) -> list[store.Change]:
    assert run.detector is not None
    changes = await run.detector.evaluate_once()
    assert changes is not None
    return changes


async def _open(conn: asyncpg.Connection) -> dict[tuple[str, str], asyncpg.Record]:
    rows = await conn.fetch("SELECT * FROM bridge.incidents WHERE stage <> 'resolved'")
    return {(r["rule"], r["scope"]): r for r in rows}


async def _funded(cashier: Cashier, player: str, amount_minor: int) -> None:
    created = await cashier.deposit(player, amount_minor, key=f"fund-{player}")
    await cashier.complete_deposit(created)
    await cashier.wait_state(created["id"], "succeeded")


async def test_normal_traffic_opens_no_incident(
        make: Factory, cashier: Cashier, conn: asyncpg.Connection, player: str) -> None:
    """Deposits paid at two PSPs, a withdrawal paid, probes answered: nothing fires."""
    async with make() as run:
        for n, psp in enumerate(["stripe", "adyen", "stripe", "adyen", "stripe"]):
            created = await cashier.deposit(player, 10_00 + n, psp=psp)
            await cashier.complete_deposit(created)
            await cashier.wait_state(created["id"], "succeeded")
        wd = await cashier.withdraw(player, 5_00)
        await cashier.complete_payout(wd)
        await cashier.wait_state(wd["id"], "paid")
        await store.record_probes(conn, await probes.probe_all(run.services.adapters))
        assert await _evaluate(run) == []
    assert await _open(conn) == {}


async def test_failed_deposits_open_an_incident_with_money_at_risk(
        make: Factory, cashier: Cashier, conn: asyncpg.Connection, player: str) -> None:
    """The simulator fails every Stripe card deposit; Adyen's succeed and stay quiet."""
    async with make() as run:
        await cashier.knobs(auto_complete_ms=20, auto_outcome="failed")
        failed = [await cashier.deposit(player, 20_00 + n, key=f"f{n}") for n in range(4)]
        for d in failed:
            await cashier.wait_state(d["id"], "failed")
        await cashier.knobs(auto_outcome="success")
        ok = [await cashier.deposit(player, 30_00 + n, psp="adyen", key=f"o{n}")
              for n in range(4)]
        for d in ok:
            await cashier.wait_state(d["id"], "succeeded")
        changes = await _evaluate(run)
    assert [(c.rule, c.scope, c.what) for c in changes] == [
        ("failed_deposits", "stripe/card", "opened")]
    incident = await store.incident(conn, changes[0].incident_id)
    assert incident["stage"] == "detected" and "4 of 4 deposits" in incident["summary"]
    assert incident["at_risk"] == {"USD": sum(20_00 + n for n in range(4))}
    assert (incident["payments"], incident["players"]) == (4, 1)
    assert incident["timeline"][0]["kind"] == "detected"


async def test_delayed_withdrawal_fires_after_the_sla_and_not_before(
        make: Factory, cashier: Cashier, conn: asyncpg.Connection, player: str) -> None:
    """A payout the PSP accepted but never paid: quiet inside the SLA, an incident after."""
    async with make(BRIDGE_INCIDENT_WITHDRAWAL_SLA_S="2") as run:
        await _funded(cashier, player, 50_00)
        wd = await cashier.withdraw(player, 12_00)
        await cashier.wait_state(wd["id"], "payout_pending")
        assert await _evaluate(run) == []
        await asyncio.sleep(2.1)
        changes = await _evaluate(run)
    assert [(c.rule, c.scope) for c in changes] == [("delayed_withdrawals", "stripe")]
    incident = await store.incident(conn, changes[0].incident_id)
    assert [p["payment_id"] for p in incident["affected"]] == [wd["id"]]
    assert incident["at_risk"] == {"USD": 12_00}


async def test_callback_errors_count_forged_webhooks(
        make: Factory, cashier: Cashier, conn: asyncpg.Connection) -> None:
    """Webhooks with bad signatures are refused and counted; three make an incident."""
    async with make() as run, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{run.port}/webhooks/stripe"
        for n in range(2):
            async with http.post(url, data=b'{"id": "evt_%d"}' % n,
                                 headers={"Stripe-Signature": "t=1,v1=00"}) as r:
                assert r.status == 401
        await webhooks.flush_rejections(run.services)
        assert await _evaluate(run) == []
        async with http.post(url, data=b"{}") as r:  # no signature at all
            assert r.status == 401
        await webhooks.flush_rejections(run.services)
        changes = await _evaluate(run)
        # The simulator's retries of the refused deliveries end here, not at the next
        # test's bridge, whose exact webhook counts they would change.
        await cashier.flush()
    assert [(c.rule, c.scope) for c in changes] == [("callback_errors", "stripe")]
    incident = await store.incident(conn, changes[0].incident_id)
    assert incident["observed"]["errors"] == 3 and incident["affected"] == []


async def test_a_rotated_webhook_secret_shows_as_callback_errors(
        make: Factory, cashier: Cashier, conn: asyncpg.Connection, player: str) -> None:
    """The simulator signs with the old Stripe secret while the bridge has a new one: its
    real deliveries (with retries) are refused, and that is an incident; Adyen's are not."""
    async with make(BRIDGE_STRIPE_WEBHOOK_SECRET="whsec_rotated_but_not_at_the_psp") as run:
        for n in range(2):
            created = await cashier.deposit(player, 5_00 + n, key=f"rot{n}")
            await cashier.complete_deposit(created)
        ok = await cashier.deposit(player, 6_00, psp="adyen")
        await cashier.complete_deposit(ok)
        await cashier.wait_state(ok["id"], "succeeded")
        async with asyncio.timeout(10):
            while sum(run.services.rejected_total.values()) < 3:
                await asyncio.sleep(0.05)
        await webhooks.flush_rejections(run.services)
        changes = await _evaluate(run)
        # The simulator's retries of the refused deliveries end here, not at the next
        # test's bridge, whose exact webhook counts they would change.
        await cashier.flush()
    assert [(c.rule, c.scope) for c in changes] == [("callback_errors", "stripe")]
    incident = await store.incident(conn, changes[0].incident_id)
    assert set(incident["observed"]["by_cause"]) == {"signature"}


async def test_currency_mismatch_and_timeout_fire_on_their_payments(
        make: Factory, cashier: Cashier, conn: asyncpg.Connection, player: str) -> None:
    """A PSP reporting another amount, and a payment nobody answers for, each an incident
    at their PSP naming that payment."""
    async with make(BRIDGE_ADYEN_PENDING_LIMIT_MS="100",
                    BRIDGE_SYNC_SCHEDULE_MS="100,100,100") as run:
        mismatch = await cashier.deposit(player, 20_00, psp="stripe")
        await cashier.complete_deposit(mismatch, amount_minor=2_00)
        await cashier.wait_state(mismatch["id"], "mismatch")
        silent = await cashier.deposit(player, 9_00, psp="adyen")
        await cashier.wait_state(silent["id"], "timed_out")
        changes = await _evaluate(run)
    assert sorted((c.rule, c.scope) for c in changes) == [
        ("currency_mismatch", "stripe"), ("transaction_timeout", "adyen")]
    found = await _open(conn)
    for key, payment in ((("currency_mismatch", "stripe"), mismatch),
                         (("transaction_timeout", "adyen"), silent)):
        view = await store.incident(conn, found[key]["id"])
        assert [p["payment_id"] for p in view["affected"]] == [payment["id"]]


async def _probe(run: BridgeRunning, conn: asyncpg.Connection) -> None:
    await store.record_probes(conn, await probes.probe_all(run.services.adapters))


async def test_gateway_downtime_lifecycle_validation_and_report(
        make: Factory, cashier: Cashier, conn: asyncpg.Connection, incident_db: str,
        tmp_path: Path) -> None:
    """The simulator goes down: failed probes open an incident; support walks it through the
    stages; resolving is refused while the condition holds; it clears when the PSP is back,
    comes back during validation (back to correcting), clears again, is resolved, and the
    report renders with its chart."""
    async with make() as run:
        await cashier.knobs(down=True)
        await _probe(run, conn)
        assert await _evaluate(run) == []  # one failed probe is not an outage
        await _probe(run, conn)
        changes = await _evaluate(run)
        opened = [c for c in changes if c.rule == "gateway_downtime"]
        assert {c.scope for c in opened} == {"stripe", "adyen", "nowpayments"}
        incident_id = next(c.incident_id for c in opened if c.scope == "adyen")

        ctl = _walletctl(incident_db)
        assert (await ctl("incidents", "advance", str(incident_id), "--to", "correcting")).returncode == 1
        assert (await ctl("incidents", "ack", str(incident_id), "--note", "PSP status page red"
                   )).returncode == 0
        assert (await ctl("incidents", "advance", str(incident_id), "--to", "correcting",
                   "--note", "paging Adyen")).returncode == 0
        assert (await ctl("incidents", "note", str(incident_id), "--action-taken", "--note",
                   "routed card traffic to stripe")).returncode == 0
        assert (await ctl("incidents", "advance", str(incident_id), "--to", "validating")).returncode == 0
        refused = await ctl("incidents", "resolve", str(incident_id), "--cause", "Adyen outage",
                      "--resolution", "waited")
        assert refused.returncode == 1 and "still holds" in refused.stderr

        await cashier.knobs(down=False)
        await _probe(run, conn)
        assert "cleared" in [c.what for c in await _evaluate(run) if c.incident_id ==
                             incident_id]
        await cashier.knobs(down=True)  # it flaps during validation
        await _probe(run, conn)
        await _probe(run, conn)
        await _evaluate(run)
        assert (await store.incident(conn, incident_id))["stage"] == "correcting"
        await cashier.knobs(down=False)
        await _probe(run, conn)
        await _evaluate(run)
    assert (await ctl("incidents", "advance", str(incident_id), "--to", "validating")).returncode == 0
    done = await ctl("incidents", "resolve", str(incident_id), "--cause", "Adyen API outage",
               "--resolution", "recovered on its own; traffic moved back")
    assert done.returncode == 0, done.stderr
    view = await store.incident(conn, incident_id)
    assert view["stage"] == "resolved" and view["resolved_by"] == "tester"
    kinds = [e["kind"] for e in view["timeline"]]
    assert kinds[0] == "detected" and "returned" in kinds and kinds.count("cleared") == 2
    listed = await ctl("incidents", "list", "--all", "--json")
    assert incident_id in [i["id"] for i in orjson.loads(listed.stdout)]

    out = await ctl("incidents", "report", str(incident_id), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    text = (tmp_path / f"incident-{incident_id}.md").read_text()
    assert "Adyen API outage" in text and "routed card traffic to stripe" in text
    period_activity = await store.activity(
        conn, psp="adyen", start=view["detected_at"] - timedelta(minutes=5),
        end=view["resolved_at"] + timedelta(minutes=5), bucket_s=60)
    failed_probes = await conn.fetchval(
        "SELECT count(*) FROM bridge.psp_probes WHERE psp = 'adyen' AND NOT up")
    assert sum(a["probes_failed"] for a in period_activity) == failed_probes == 4
    png = (tmp_path / f"incident-{incident_id}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def _walletctl(database_url: str, **env: str) -> Callable[..., Awaitable[Ran]]:
    """walletctl in a child process, awaited without blocking the loop the bridge under
    test runs on (it has to apply what walletctl stores)."""
    async def run(*args: str) -> Ran:
        # USER names the actor, as it does for a person at a terminal.
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway_bridge.support.cli", *args, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", ""), "DATABASE_URL": database_url,
                 "USER": "tester", **env})
        async with asyncio.timeout(60):
            out, err = await child.communicate()
        assert child.returncode is not None
        return Ran(child.returncode, out.decode(), err.decode())
    return run


async def test_stuck_payment_settled_by_hand_moves_money_once_and_is_audited(
        make: Factory, cashier: Cashier, client: Client, conn: asyncpg.Connection,
        incident_db: str, player: str, server: WalletRunning) -> None:
    """A timed-out deposit in a timeout incident: support settles it as paid (with a
    reason); the running bridge credits it once, a repeat changes nothing, the payment's
    history and the incident's timeline say who and why; walletctl shows the player."""
    async with make(BRIDGE_ADYEN_PENDING_LIMIT_MS="100",
                    BRIDGE_SYNC_SCHEDULE_MS="100,100,100") as run:
        stuck = await cashier.deposit(player, 14_00, psp="adyen")
        await cashier.wait_state(stuck["id"], "timed_out")
        (change,) = await _evaluate(run)
        ctl = _walletctl(incident_db)
        args = ("payment", "resolve", stuck["id"], "--outcome", "succeeded", "--reason",
                "Adyen dashboard shows it captured")
        first = await ctl(*args)
        assert first.returncode == 0, first.stderr
        assert "applied" in first.stdout
        again = await ctl(*args)  # the same settlement again: nothing new
        assert again.returncode == 0 and "already settled" in again.stdout, again
        await cashier.wait_state(stuck["id"], "succeeded")
        assert (await client.balance(player)).cash == 14_00
        refused = await ctl("payment", "resolve", stuck["id"], "--outcome", "failed", "--reason",
                      "changed my mind")
        assert refused.returncode == 1 and "already settled by hand differently" in \
            refused.stderr, refused
        await _evaluate(run)
    notes = [r["note"] for r in await conn.fetch(
        "SELECT note FROM bridge.payment_history WHERE payment_id = $1", stuck["id"])]
    assert sum("settled by hand as succeeded by tester" in n for n in notes) == 1, notes
    view = await store.incident(conn, change.incident_id)
    actions = [e for e in view["timeline"] if e["kind"] == "action"]
    assert len(actions) == 1 and "Adyen dashboard" in actions[0]["text"]
    assert view["cleared_at"] is not None  # nothing timed out any more

    await client.call("SetLimits", pb.SetLimitsRequest(
        player_id=player, currency="USD", idempotency_key=new_key("lim"), changes=[pb.LimitChange(
            kind=pb.LIMIT_KIND_WAGER, period=pb.LIMIT_PERIOD_DAY, amount=5_00)]), "limits")
    shown = await _walletctl(incident_db, WALLETCTL_WALLET_ADDR=f"127.0.0.1:{server.port}",
                             WALLETCTL_WALLET_TOKEN=TOKENS["support"])("player", player,
                                                                       "--currency", "USD")
    assert shown.returncode == 0, shown.stderr
    seen = orjson.loads(shown.stdout)
    assert seen["wallets"][0]["balances"]["cash"] == "1400"
    assert [p["id"] for p in seen["payments"]] == [stuck["id"]]
    assert any(t["kind"] == "deposit" for t in seen["wallets"][0]["transactions"])
    [limit] = seen["wallets"][0]["limits"]["limits"]
    assert (limit["kind"], limit["period"], limit["amount"]) == (
        "LIMIT_KIND_WAGER", "LIMIT_PERIOD_DAY", "500")


async def test_the_running_bridge_evaluates_on_its_own(
        incident_db: str, conn: asyncpg.Connection, server: WalletRunning, sim: str,
        bridge_port: int, cashier: Cashier, player: str) -> None:
    """With the detector on, a mismatch becomes an incident without anyone asking."""
    env = bridge_env(database_url=incident_db, wallet_port=server.port, sim_url=sim,
                     bridge_port=bridge_port, **{**RULES, "BRIDGE_INCIDENTS_ENABLED": "true",
                                                 "BRIDGE_INCIDENT_INTERVAL_MS": "200"})
    async with bridge_running(bridge_config.load(env), migrate_first=False):
        created = await cashier.deposit(player, 20_00, psp="adyen")
        await cashier.complete_deposit(created, amount_minor=1_00)
        await cashier.wait_state(created["id"], "mismatch")
        async with asyncio.timeout(10):
            while ("currency_mismatch", "adyen") not in await _open(conn):
                await asyncio.sleep(0.1)


async def test_settling_by_hand_works_while_the_bridge_is_down_and_only_once(
        make: Factory, cashier: Cashier, client: Client, conn: asyncpg.Connection,
        incident_db: str, player: str) -> None:
    """With the bridge stopped, a settlement is stored and waits; a second, different
    settlement of the same payment is refused (it could pay out and then reverse); the
    bridge, started again, applies the first once."""
    async with make(BRIDGE_STRIPE_PENDING_LIMIT_MS="100",
                    BRIDGE_SYNC_SCHEDULE_MS="100,100,100"):
        await cashier.knobs(poll_status="pending")
        stuck = await cashier.deposit(player, 7_00, psp="stripe")
        await cashier.wait_state(stuck["id"], "timed_out")
    ctl = _walletctl(incident_db)
    stored = await ctl("payment", "resolve", stuck["id"], "--outcome", "succeeded",
                       "--reason", "bank statement shows it", "--wait-s", "0")
    assert stored.returncode == 0 and "still pending" in stored.stdout, stored
    other = await ctl("payment", "resolve", stuck["id"], "--outcome", "failed", "--reason",
                      "no, it failed")
    assert other.returncode == 1 and "already settled by hand differently" in other.stderr
    dismissed = await ctl("payment", "resolve", stuck["id"], "--outcome", "dismiss",
                          "--reason", "just hide it")
    assert dismissed.returncode == 1 and "still waiting for an answer" in dismissed.stderr
    async with make():
        await cashier.wait_state(stuck["id"], "succeeded")
    assert (await client.balance(player)).cash == 7_00
    assert await conn.fetchval("SELECT count(*) FROM bridge.inbox WHERE source = 'support'"
                               ) == 1


async def test_dismissed_mismatch_clears_its_incident_without_looking_new(
        make: Factory, cashier: Cashier, conn: asyncpg.Connection, incident_db: str,
        player: str) -> None:
    """Support deals with a mismatch and dismisses it: its last change keeps its time, and
    the incident's condition clears on the next evaluation."""
    async with make() as run:
        created = await cashier.deposit(player, 20_00, psp="stripe")
        await cashier.complete_deposit(created, amount_minor=2_00)
        await cashier.wait_state(created["id"], "mismatch")
        (opened,) = await _evaluate(run)
        before = await conn.fetchval("SELECT updated_at FROM bridge.payments WHERE id = $1",
                                     created["id"])
        done = await _walletctl(incident_db)(
            "payment", "resolve", created["id"], "--outcome", "dismiss", "--reason",
            "refunded the 2.00 at the PSP")
        assert done.returncode == 0, done
        assert await conn.fetchval("SELECT updated_at FROM bridge.payments WHERE id = $1",
                                   created["id"]) == before
        assert [c.what for c in await _evaluate(run)] == ["cleared"]
    view = await store.incident(conn, opened.incident_id)
    assert [e["kind"] for e in view["timeline"]] == ["detected", "action", "cleared"]


async def test_force_resolved_incident_stays_quiet_until_its_condition_clears(
        make: Factory, cashier: Cashier, conn: asyncpg.Connection, incident_db: str) -> None:
    """Resolved by force while the PSP is still down: no new incident (and no new page)
    while it stays down; once it has been up, the next outage is a new incident."""
    async with make(BRIDGE_INCIDENT_PROBE_FAILURES_MIN="1") as run:
        await cashier.knobs(down=True)
        await _probe(run, conn)
        opened = {c.scope: c.incident_id for c in await _evaluate(run)}
        done = await _walletctl(incident_db)(
            "incidents", "resolve", str(opened["stripe"]), "--force", "--cause",
            "planned maintenance", "--resolution", "known, nothing to do")
        assert done.returncode == 0, done
        await _probe(run, conn)
        assert "stripe" not in {c.scope for c in await _evaluate(run)}
        await cashier.knobs(down=False)
        await _probe(run, conn)
        await _evaluate(run)
        await cashier.knobs(down=True)
        await _probe(run, conn)
        again = {c.scope: c for c in await _evaluate(run) if c.what == "opened"}
    assert "stripe" in again and again["stripe"].incident_id != opened["stripe"]


async def test_one_evaluation_at_a_time_across_replicas(make: Factory,
                                                       incident_db: str) -> None:
    """While another replica holds the evaluation lock, an evaluation does nothing."""
    async with make() as run:
        other = await asyncpg.connect(incident_db)
        try:
            async with other.transaction():
                assert await store.try_evaluation_lock(other)
                assert run.detector is not None
                assert await run.detector.evaluate_once() is None
        finally:
            await other.close()
        assert await run.detector.evaluate_once() == []


async def test_walletctl_answers_mistakes_with_exit_codes_not_tracebacks(
        incident_db: str, conn: asyncpg.Connection, tmp_path: Path) -> None:
    """Bad ids and arguments exit 2, unknown ones 1, an unreachable database 3; never a
    traceback."""
    ctl = _walletctl(incident_db)
    for args, code in [(("incidents", "show", "99999999999999999999"), 2),
                       (("incidents", "show", "abc"), 2),
                       (("incidents", "show", "424242"), 1),
                       (("incidents", "resolve", "1", "--cause", "x"), 2),
                       (("incidents", "advance", "1"), 2),
                       (("payment", "resolve", "pay_nope", "--outcome", "failed", "--reason",
                         "x"), 1)]:
        ran = await ctl(*args)
        assert (ran.returncode, "Traceback" in ran.stderr) == (code, False), (args, ran)
    down = await _walletctl("postgresql://127.0.0.1:1/none")("incidents", "list")
    assert down.returncode == 3 and "database unavailable" in down.stderr
    assert "Traceback" not in down.stderr
