"""Reconciliation end to end: payments made through the real bridge, wallet and PSP
simulator; the simulator's settlement report (with planted differences) imported against
the bridge's payments and the wallet journal, through the use case and through the CLI."""

from __future__ import annotations

import asyncio
import csv
import math
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from gateway_bridge.reconciliation import service
from gateway_bridge.reconciliation.matcher import FindingKind, Period
from gateway_bridge.server import Running as BridgeRunning
from service_kit.pg import init_json_codecs
from tests.bridge.conftest import Cashier

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def recon_conn(bridge_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(bridge_db)
    await init_json_codecs(conn)
    yield conn
    await conn.close()


async def settled_deposit(cashier: Cashier, player: str, amount_minor: int,
                          psp: str) -> dict[str, Any]:
    created = await cashier.deposit(player, amount_minor, psp=psp,
                                    key=f"recon-{player}-{amount_minor}")
    await cashier.complete_deposit(created)
    return await cashier.wait_state(created["id"], "succeeded")


async def paid_withdrawal(cashier: Cashier, player: str, amount_minor: int,
                          psp: str) -> dict[str, Any]:
    created = await cashier.withdraw(player, amount_minor, psp=psp)
    pending = await cashier.wait_state(created["id"], "payout_pending")
    await cashier.complete_payout(pending)
    return await cashier.wait_state(created["id"], "paid")


async def sim_report(cashier: Cashier, psp: str, start: float, end: float,
                     **plants: Any) -> bytes:
    params: list[tuple[str, str]] = [("from", str(math.floor(start))),
                                     ("to", str(math.ceil(end) + 1))]
    for name, values in plants.items():
        for value in values if isinstance(values, list) else [values]:
            params.append((name, str(value)))
    async with cashier.http.get(f"{cashier.sim_url}/_sim/reports/{psp}", params=params) as r:
        body = await r.read()
        assert r.status == 200, body
        return body


async def next_second() -> float:
    """Wait for a whole second: the simulator dates objects in seconds, so objects of
    earlier tests can't fall inside this test's report window."""
    now = time.time()
    await asyncio.sleep(math.floor(now) + 1 - now)
    return float(math.floor(now) + 1)


def period(start: float, end: float) -> Period:
    return Period(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))


@pytest.mark.parametrize("psp", ["stripe", "adyen"])
async def test_each_planted_difference_is_found_and_reruns_are_idempotent(
        psp: str, bridge: BridgeRunning, cashier: Cashier, player: str,
        recon_conn: asyncpg.Connection, ledger_clean: None) -> None:
    """Dropped, re-priced, re-currencied, charged-back and unknown rows each give their
    finding; a clean payment and a payout match; importing the file again changes nothing."""
    start = await next_second()
    clean, dropped, repriced, recurrencied, disputed = [
        await settled_deposit(cashier, player, amount, psp)
        for amount in (10_00, 11_00, 12_00, 13_00, 14_00)]
    payout = await paid_withdrawal(cashier, player, 5_00, psp)
    await cashier.flush()
    end = time.time()
    report = await sim_report(
        cashier, psp, start, end, drop=dropped["id"], amount=f"{repriced['id']}:12001",
        currency=f"{recurrencied['id']}:EUR", chargeback=disputed["id"], unknown=1)

    outcome = await service.reconcile(recon_conn, psp=psp, data=report,
                                      period=period(start, end))
    by_payment = {(f.payment_id, f.kind) for f in outcome.stored.findings}
    assert (clean["id"], FindingKind.MATCHED) in by_payment
    assert (payout["id"], FindingKind.MATCHED) in by_payment
    assert (dropped["id"], FindingKind.MISSING_PSP) in by_payment
    assert (repriced["id"], FindingKind.AMOUNT) in by_payment
    assert (recurrencied["id"], FindingKind.CURRENCY) in by_payment
    assert (disputed["id"], FindingKind.MATCHED) in by_payment      # its settled line
    assert (disputed["id"], FindingKind.STATUS) in by_payment       # the chargeback line
    assert (None, FindingKind.MISSING_OURS) in by_payment
    assert outcome.summary["counts"] == {
        "matched": 3, "missing_ours": 1, "missing_psp": 1, "amount_difference": 1,
        "currency_difference": 1, "status_difference": 1, "fee": 0}
    assert outcome.summary["currencies"]["USD"]["fee_minor"] > 0

    again = await service.reconcile(recon_conn, psp=psp, data=report)
    assert again.stored.replay and again.stored.id == outcome.stored.id
    assert again.stored.findings == outcome.stored.findings
    assert again.summary["counts"] == outcome.summary["counts"]
    stored = await recon_conn.fetchval(
        "SELECT count(*) FROM bridge.recon_findings WHERE import_id = $1", outcome.stored.id)
    imports = await recon_conn.fetchval(
        "SELECT count(*) FROM bridge.recon_imports WHERE report_sha256 = $1",
        outcome.stored.sha256)
    assert (stored, imports) == (len(outcome.stored.findings), 1)


async def run_cli(*args: str, database_url: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway_bridge", "reconcile", *args, cwd=ROOT,
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_end_to_end_on_simulator_reports(
        bridge: BridgeRunning, cashier: Cashier, player: str, bridge_db: str,
        tmp_path: Path) -> None:
    """`gateway-bridge reconcile`: a clean report exits 0, a planted one 1 with its CSV,
    an unreadable file or layout 2 naming the line/column."""
    start = await next_second()
    first = await settled_deposit(cashier, player, 20_00, "stripe")
    second = await settled_deposit(cashier, player, 21_00, "stripe")
    await cashier.flush()
    end = time.time()
    window = ["--from", datetime.fromtimestamp(start, UTC).isoformat(),
              "--to", datetime.fromtimestamp(end, UTC).isoformat()]
    clean = tmp_path / "clean.csv"
    clean.write_bytes(await sim_report(cashier, "stripe", start, end))
    planted = tmp_path / "planted.csv"
    planted.write_bytes(await sim_report(cashier, "stripe", start, end,
                                         amount=f"{second['id']}:1"))

    code, out, err = await run_cli("--psp", "stripe", str(clean), "--out", str(tmp_path / "o"),
                                   *window, database_url=bridge_db)
    assert code == 0, (out, err)
    assert "matched" in out and "differences" in out

    code, out, err = await run_cli("--psp", "stripe", str(planted), "--out",
                                   str(tmp_path / "o"), *window, database_url=bridge_db)
    assert code == 1, (out, err)
    written = sorted((tmp_path / "o").glob("recon-stripe-*.csv"))
    assert len(written) == 2
    rows = [r for path in written for r in csv.DictReader(path.open())]
    differing = [r for r in rows if r["difference"] == "yes"]
    assert [(r["kind"], r["payment_id"], r["report_amount_minor"], r["our_amount_minor"])
            for r in differing] == [("amount_difference", second["id"], "1", "2100")]
    assert any(r["payment_id"] == first["id"] and r["kind"] == "matched" for r in rows)

    code, out, err = await run_cli("--psp", "adyen", str(clean), database_url=bridge_db)
    assert code == 2 and "line 1" in err and "Psp Reference" in err, err
    bad = tmp_path / "bad.csv"
    bad.write_bytes(clean.read_bytes().replace(b",20.00,", b",20.001,", 1))
    bad_line_no = next(n for n, text in enumerate(bad.read_bytes().split(b"\n"), start=1)
                       if b",20.001," in text)
    code, out, err = await run_cli("--psp", "stripe", str(bad), database_url=bridge_db)
    assert code == 2 and f"line {bad_line_no}, column 'gross'" in err, err
    code, out, err = await run_cli("--psp", "stripe", str(tmp_path / "nope.csv"),
                                   database_url=bridge_db)
    assert code == 2 and "unreadable" in err, err


async def test_sim_report_refuses_bad_knobs(sim: str) -> None:
    """The report endpoint answers 404 for a PSP without reports and 400 for bad plants."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim}/_sim/reports/nowpayments") as r:
            assert r.status == 404
        async with http.get(f"{sim}/_sim/reports/stripe", params={"amount": "x"}) as r:
            assert r.status == 400
        async with http.get(f"{sim}/_sim/reports/adyen", params={"from": "soon"}) as r:
            assert r.status == 400
