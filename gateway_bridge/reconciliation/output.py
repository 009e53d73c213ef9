"""The findings as a CSV and the summary (pure: findings in, text and dicts out).

The CSV has one row per finding, matched ones included (each row carries its fee), with
the fixed columns of `CSV_COLUMNS`; `difference` says whether support has to look at it.
The summary counts findings per kind (every kind listed, zeros too) and totals per currency,
in minor units: what the report said was paid (by the currency the player paid in), its fees
and net (by settlement currency), and the money in each kind of difference. Both are built
from the findings alone, so a replayed import prints exactly what the first one did.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from gateway_bridge.reconciliation.matcher import DIFFERENCES, Finding, FindingKind

CSV_COLUMNS = ("kind", "difference", "line_no", "payment_id", "psp_reference", "psp_type",
               "currency", "report_amount_minor", "our_amount_minor", "settlement_currency",
               "fee_minor", "net_minor", "our_state", "note")


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def findings_csv(findings: Sequence[Finding]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for f in findings:
        writer.writerow([_cell(v) for v in (
            f.kind.value, "yes" if f.is_difference else "no", f.line_no, f.payment_id,
            f.psp_reference, f.psp_type, f.currency, f.report_amount_minor,
            f.our_amount_minor, f.settlement_currency, f.fee_minor, f.net_minor, f.our_state,
            f.note)])
    return out.getvalue()


_TOTALS = ("reported_minor", "fee_minor", "net_minor", "missing_ours_minor",
           "missing_psp_minor", "amount_difference_minor")


def _totals(findings: Sequence[Finding]) -> dict[str, dict[str, int]]:
    by_currency: dict[str, dict[str, int]] = {}

    def add(currency: str, key: str, amount_minor: int) -> None:
        if currency:
            row = by_currency.setdefault(currency, dict.fromkeys(_TOTALS, 0))
            row[key] += amount_minor

    for f in findings:
        if f.kind is FindingKind.MISSING_PSP:
            add(f.currency, "missing_psp_minor", f.our_amount_minor or 0)
            continue
        add(f.currency, "reported_minor", f.report_amount_minor or 0)
        add(f.settlement_currency, "fee_minor", f.fee_minor)
        add(f.settlement_currency, "net_minor", f.net_minor)
        if f.kind is FindingKind.MISSING_OURS:
            add(f.currency, "missing_ours_minor", f.report_amount_minor or 0)
        elif f.kind is FindingKind.AMOUNT:
            add(f.currency, "amount_difference_minor",
                (f.report_amount_minor or 0) - (f.our_amount_minor or 0))
    return dict(sorted(by_currency.items()))


def summary(findings: Sequence[Finding], *, report: dict[str, Any]) -> dict[str, Any]:
    """`report` describes the import (psp, layout, sha256, lines, period, import id...)."""
    counts = {kind.value: 0 for kind in FindingKind}
    for f in findings:
        counts[f.kind.value] += 1
    return {
        **report,
        "counts": counts,
        "differences": sum(counts[k.value] for k in DIFFERENCES),
        "currencies": _totals(findings),
    }


def summary_text(data: dict[str, Any]) -> str:
    lines = [
        f"report   {data['psp']} {data['layout']} sha256={data['sha256'][:16]}… "
        f"lines={data['lines']}",
        f"period   {data['period_from']} .. {data['period_to']}",
        f"import   #{data['import_id']} "
        + (f"(already imported at {data['imported_at']}: stored findings)"
           if data["replay"] else "(new)"),
    ]
    lines += [f"  {kind:<22}{n:>8}" for kind, n in data["counts"].items()]
    lines.append(f"  {'differences':<22}{data['differences']:>8}")
    for currency, totals in data["currencies"].items():
        parts = " ".join(f"{k}={v}" for k, v in totals.items())
        lines.append(f"{currency:<8} {parts}")
    return "\n".join(lines)
