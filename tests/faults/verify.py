"""The verifier: what the traffic driver recorded, proved against Postgres.

- every acknowledged operation is in wallet.journal exactly once, under (caller, key), with
  the transaction id the client was given;
- every unacknowledged one is there at most once, and after `Traffic.converge()` exactly once;
- no journal row on the run's wallets that no operation of the run explains (a second
  effect would show up there), and no answer that named two different transactions;
- each player whose session ran cleanly holds exactly the balances its last answer reported;
- `wallet-core check` (the real command, in a subprocess) is clean.

Then one row per scenario is appended to the results file (JSON lines) that
`scripts/faults.sh` turns into the table of docs/RELIABILITY.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from tests.faults.traffic import Op, Traffic

CHECK_TIMEOUT_S = 120


def results_path() -> Path:
    default = Path(tempfile.gettempdir()) / "wallet-faults" / "results.jsonl"
    return Path(os.environ.get("FAULTS_RESULTS") or default)


@dataclass
class Report:
    scenario: str
    attempted: int = 0
    acknowledged: int = 0              # acknowledged while the fault ran
    converged: int = 0                 # acknowledged only by the final retries
    found_in_ledger: int = 0
    lost: int = 0
    duplicated: int = 0
    mismatched: int = 0                # answer's transaction id differs from the ledger's
    balance_mismatches: int = 0
    unacked_present_before_converge: int = 0
    check: str = "not run"
    seconds: float = 0.0
    attempts: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def assert_sound(self) -> None:
        """Zero lost, zero duplicated, every answer consistent, ledger check clean, and no
    INTERNAL answers."""
        assert self.attempted > 0, "no traffic ran"
        assert not self.problems, "\n".join(self.problems[:30])
        assert (self.lost, self.duplicated, self.mismatched, self.balance_mismatches) == (
            0, 0, 0, 0)
        assert self.check == "clean", self.check
        # A fault is never the caller's bug: it answers UNAVAILABLE (retry with the same key)
        # or DEADLINE_EXCEEDED, never INTERNAL (which tells a client not to retry).
        assert self.codes.get("INTERNAL", 0) == 0, self.codes

    def append_to_results(self) -> None:
        path = results_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        row = asdict(self)
        row["problems"] = row["problems"][:10]
        with path.open("ab") as out:
            out.write(orjson.dumps(row) + b"\n")


async def journal_rows(conn: asyncpg.Connection, run_id: str) -> dict[tuple[str, str],
                                                                      list[str]]:
    """(caller, key) -> journal ids, for every key of the run."""
    rows = await conn.fetch("SELECT caller, idempotency_key, id::text AS id FROM wallet.journal "
                            "WHERE starts_with(idempotency_key, $1)", run_id + "-")
    found: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        found.setdefault((r["caller"], r["idempotency_key"]), []).append(r["id"])
    return found


async def snapshot_unacked(conn: asyncpg.Connection, traffic: Traffic, report: Report) -> None:
    """Before the final retries: unacknowledged operations may be there (once) or not."""
    found = await journal_rows(conn, traffic.run_id)
    present = 0
    for call in traffic.unacked():
        for op in call.ops:
            ids = found.get((op.caller, op.key), [])
            if len(ids) > 1:
                report.duplicated += 1
                report.problems.append(f"unacknowledged {op.kind} {op.key}: rows {ids}")
            present += len(ids) == 1 and op.acked_tx is None
    report.unacked_present_before_converge = present


def _check_op(op: Op, ids: list[str], report: Report) -> None:
    if ids:
        report.found_in_ledger += 1
    if len(ids) > 1:
        report.duplicated += 1
        report.problems.append(f"{op.kind} {op.key}: {len(ids)} journal rows {ids}")
    if op.acked_tx is None:
        report.lost += not ids  # the client's retries should have converged by now
        report.problems.append(f"{op.kind} {op.key}: never acknowledged, even after retries "
                               f"(rows {ids})")
        return
    if not ids:
        report.lost += 1
        report.problems.append(f"{op.kind} {op.key}: acknowledged as {op.acked_tx}, "
                               "not in the journal")
    elif op.acked_tx not in ids:
        report.mismatched += 1
        report.problems.append(f"{op.kind} {op.key}: acknowledged as {op.acked_tx}, "
                               f"journal has {ids}")
    if op.tx_mismatch:
        report.mismatched += 1
        report.problems.append(f"{op.kind} {op.key}: answers named {op.tx_mismatch}")


async def _unexplained_rows(conn: asyncpg.Connection, traffic: Traffic,
                            keys: set[tuple[str, str]]) -> list[str]:
    """Journal rows on the run's wallets that no operation of the run sent."""
    rows = await conn.fetch(
        "SELECT j.caller, j.idempotency_key, j.kind FROM wallet.journal j "
        "JOIN wallet.wallets w ON w.id = j.wallet_id "
        "WHERE starts_with(w.player_id, $1) AND j.caller <> 'system'", traffic.run_id + "-")
    return [f"{r['kind']} {r['caller']}/{r['idempotency_key']}" for r in rows
            if (r["caller"], r["idempotency_key"]) not in keys]


async def _check_balances(conn: asyncpg.Connection, traffic: Traffic, report: Report) -> None:
    rows = await conn.fetch("SELECT player_id, cash, bonus, reserved FROM wallet.wallets "
                            "WHERE starts_with(player_id, $1)", traffic.run_id + "-")
    clean = 0
    for r in rows:
        player = r["player_id"]
        expected = traffic.last_balances.get(player)
        if player in traffic.stats.tainted_players or expected is None:
            continue
        clean += 1
        actual = (r["cash"], r["bonus"], r["reserved"])
        if actual != expected:
            report.balance_mismatches += 1
            report.problems.append(f"{player}: balances {actual}, last answer said {expected}")
    report.notes["players_balance_checked"] = clean


def run_check(database_url: str) -> str:
    """`wallet-core check` as operators run it."""
    proc = subprocess.run([sys.executable, "-m", "wallet_core", "check"],
                          env={**os.environ, "DATABASE_URL": database_url},
                          capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    if proc.returncode == 0:
        return "clean"
    return f"FAILED ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}"


async def verify(database_url: str, traffic: Traffic, report: Report,
                 started: float) -> Report:
    """Everything in the module docstring; fills `report` and appends it to the results."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        found = await journal_rows(conn, traffic.run_id)
        keys: set[tuple[str, str]] = set()
        for call in traffic.calls:
            for op in call.ops:
                keys.add((op.caller, op.key))
                report.attempted += 1
                report.acknowledged += op.acked_tx is not None and not op.acked_in_converge
                report.converged += op.acked_in_converge
                _check_op(op, found.get((op.caller, op.key), []), report)
        unexplained = await _unexplained_rows(conn, traffic, keys)
        report.duplicated += len(unexplained)
        report.problems += [f"journal row no operation explains: {u}" for u in unexplained]
        await _check_balances(conn, traffic, report)
    finally:
        await conn.close()
    report.check = run_check(database_url)
    stats = traffic.stats
    report.attempts = stats.attempts
    report.codes = dict(stats.codes)
    report.notes.update({"players": stats.players, "tainted_players": len(stats.tainted_players),
                         "attempt_s_max": round(stats.attempt_s_max, 3),
                         "replayed_after_error": stats.replayed_after_error,
                         "deadline_exceeded_then_replayed": stats.deadline_then_replayed})
    report.seconds = round(time.monotonic() - started, 1)
    report.append_to_results()
    return report


async def settle_and_verify(database_url: str, traffic: Traffic, report: Report,
                            started: float, converge_target: str) -> Report:
    """The fault has healed: note which unacknowledged operations are already in the ledger,
    let the client retry them, then verify everything and append the results row."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await snapshot_unacked(conn, traffic, report)
    finally:
        await conn.close()
    await traffic.converge(converge_target)
    return await verify(database_url, traffic, report, started)
