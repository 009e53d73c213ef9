"""The reconciliation use case: read a report, match it, record it once, write the outputs.

A report already imported (same bytes, same SHA-256) is not matched again: its stored
findings are returned, so re-running a report is idempotent even after our records moved on.
The period our payments are expected in is the one given, else the whole UTC days the
report's lines span; a report with no lines needs it given.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from gateway_bridge.reconciliation import layouts, matcher, output, store
from gateway_bridge.reconciliation.layouts import Report, ReportError
from gateway_bridge.reconciliation.matcher import Period
from gateway_bridge.reconciliation.store import StoredImport


@dataclass(frozen=True, slots=True)
class Outcome:
    stored: StoredImport
    summary: dict[str, Any]

    @property
    def differences(self) -> int:
        return int(self.summary["differences"])


def default_period(report: Report) -> Period:
    first, last = report.first_at, report.last_at
    if first is None or last is None:
        raise ReportError("the report has no lines: give the period (--from/--to)")
    start = datetime.combine(first.date(), time(), UTC)
    return Period(start, datetime.combine(last.date(), time(), UTC) + timedelta(days=1))


def _summary(stored: StoredImport) -> dict[str, Any]:
    return output.summary(stored.findings, report={
        "psp": stored.psp, "layout": stored.layout, "sha256": stored.sha256,
        "lines": stored.lines_read, "import_id": stored.id, "replay": stored.replay,
        "imported_at": stored.imported_at.isoformat(),
        "period_from": stored.period.from_at.isoformat(),
        "period_to": stored.period.to_at.isoformat()})


async def reconcile(conn: asyncpg.Connection, *, psp: str, data: bytes,
                    period: Period | None = None) -> Outcome:
    """ReportError for a report that can't be read, or one imported before under another
    psp or period; database errors pass through."""
    report = layouts.parse(psp, data)
    previous = await store.stored_import(conn, report.sha256)
    if previous is not None:
        if previous.psp != psp or (period is not None and period != previous.period):
            raise ReportError(
                f"this report was imported as #{previous.id} for {previous.psp} over "
                f"{previous.period.from_at.isoformat()} .. {previous.period.to_at.isoformat()}")
        return Outcome(previous, _summary(previous))
    period = period or default_period(report)
    references = sorted({r for line in report.lines for r in line.references})
    ours = await store.our_payments(conn, psp=psp, references=references, period=period)
    findings = matcher.match(report.lines, ours, period)
    stored = await store.save_import(conn, report, period, findings)
    return Outcome(stored, _summary(stored))


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_outputs(outcome: Outcome, out_dir: Path) -> tuple[Path, Path]:
    """`recon-<psp>-<sha256[:12]>.csv` and `.summary.json` in out_dir (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"recon-{outcome.stored.psp}-{outcome.stored.sha256[:12]}"
    csv_path, summary_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.summary.json"
    _write_atomically(csv_path, output.findings_csv(outcome.stored.findings).encode())
    _write_atomically(summary_path, orjson.dumps(outcome.summary, option=orjson.OPT_INDENT_2))
    return csv_path, summary_path
