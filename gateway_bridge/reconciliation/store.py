"""Reconciliation's storage: our side of the match (bridge payments with the wallet's journal)
and the imports with their findings. All SQL is in `reconciliation/queries.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway_bridge.reconciliation import queries as q
from gateway_bridge.reconciliation.layouts import Report
from gateway_bridge.reconciliation.matcher import Finding, FindingKind, OurPayment, Period

# Each statement's budget; a report's reads are a few indexed lookups with big ANY() lists.
QUERY_TIMEOUT_S = 30.0
# States in which the PSP must have a payment of ours in its report (matcher._MUST_REPORT).
REPORTED_STATES = ("succeeded", "charged_back", "paid", "reversed")
# More payments than this in one period means the period is far too long for one report.
PERIOD_PAYMENTS_MAX = 200_000


class PeriodTooLong(ValueError):
    """More of our payments in the period than one report can be matched against."""


@dataclass(frozen=True, slots=True)
class StoredImport:
    id: int
    sha256: str
    psp: str
    layout: str
    period: Period
    lines_read: int
    imported_at: datetime
    findings: list[Finding]
    replay: bool


async def our_payments(conn: asyncpg.Connection, *, psp: str, references: Sequence[str],
                       period: Period) -> list[OurPayment]:
    """The payments the report names plus those it should name, with the wallet's entries,
    read at one instant."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(q.PAYMENTS_BY_REFERENCE, psp, list(references),
                                timeout=QUERY_TIMEOUT_S)
        in_period = await conn.fetch(q.PAYMENTS_IN_PERIOD, psp, period.from_at, period.to_at,
                                     list(REPORTED_STATES), PERIOD_PAYMENTS_MAX + 1,
                                     timeout=QUERY_TIMEOUT_S)
        if len(in_period) > PERIOD_PAYMENTS_MAX:
            raise PeriodTooLong(f"more than {PERIOD_PAYMENTS_MAX} payments in the period")
        payments = {r["id"]: r for r in [*rows, *in_period]}
        deposit_ids = [pid for pid, r in payments.items() if r["direction"] == "deposit"]
        withdrawal_ids = [int(r["withdrawal_id"]) for r in payments.values()
                          if r["direction"] == "withdrawal"
                          and (r["withdrawal_id"] or "").isdigit()]
        credited = {r["payment_id"]: r["amount_minor"] for r in await conn.fetch(
            q.WALLET_DEPOSITS, psp, deposit_ids, timeout=QUERY_TIMEOUT_S)}
        paid_out = {str(r["id"]): r for r in await conn.fetch(
            q.WALLET_WITHDRAWALS, withdrawal_ids, timeout=QUERY_TIMEOUT_S)}
    return [_our_payment(r, credited, paid_out) for r in payments.values()]


def _our_payment(row: asyncpg.Record, credited: dict[str, int],
                 paid_out: dict[str, asyncpg.Record]) -> OurPayment:
    wallet_minor: int | None
    reversed_ = False
    if row["direction"] == "deposit":
        wallet_minor = credited.get(row["id"])
    else:
        w = paid_out.get(row["withdrawal_id"] or "")
        wallet_minor = w["amount_minor"] if w else None
        reversed_ = bool(w and w["state"] == "reversed")
    return OurPayment(
        id=row["id"], direction=row["direction"], state=row["state"],
        currency=row["currency"], amount_minor=row["amount_minor"],
        charged_back_minor=row["charged_back_minor"], psp_reference=row["psp_reference"],
        psp_reference_alt=row["psp_reference_alt"], created_at=row["created_at"],
        wallet_minor=wallet_minor, wallet_reversed=reversed_)


def _finding_row(f: Finding) -> tuple[Any, ...]:
    return (f.kind.value, f.line_no, f.payment_id, f.psp_reference, f.psp_type, f.currency,
            f.report_amount_minor, f.our_amount_minor, f.settlement_currency, f.fee_minor,
            f.net_minor, f.our_state, f.note)


def _finding(row: asyncpg.Record) -> Finding:
    return Finding(
        kind=FindingKind(row["kind"]), line_no=row["line_no"], payment_id=row["payment_id"],
        psp_reference=row["psp_reference"], psp_type=row["psp_type"],
        currency=row["currency"], report_amount_minor=row["report_amount_minor"],
        our_amount_minor=row["our_amount_minor"],
        settlement_currency=row["settlement_currency"], fee_minor=row["fee_minor"],
        net_minor=row["net_minor"], our_state=row["our_state"], note=row["note"])


async def _stored(conn: asyncpg.Connection, row: asyncpg.Record, *,
                  replay: bool) -> StoredImport:
    findings = [_finding(r) for r in await conn.fetch(q.FINDINGS, row["id"],
                                                      timeout=QUERY_TIMEOUT_S)]
    return StoredImport(
        id=row["id"], sha256=row["report_sha256"], psp=row["psp"], layout=row["layout"],
        period=Period(row["period_from"], row["period_to"]), lines_read=row["lines_read"],
        imported_at=row["imported_at"], findings=findings, replay=replay)


async def stored_import(conn: asyncpg.Connection, sha256: str) -> StoredImport | None:
    row = await conn.fetchrow(q.IMPORT_BY_SHA256, sha256, timeout=QUERY_TIMEOUT_S)
    return await _stored(conn, row, replay=True) if row else None


async def save_import(conn: asyncpg.Connection, report: Report, period: Period,
                      findings: Sequence[Finding]) -> StoredImport:
    """Records the import and its findings in one transaction, once per report hash: when
    the same report was stored meanwhile, that import is returned instead."""
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.kind.value] = counts.get(f.kind.value, 0) + 1
    async with conn.transaction(isolation="read_committed"):
        row = await conn.fetchrow(q.INSERT_IMPORT, report.sha256, report.psp, report.layout,
                                  period.from_at, period.to_at, len(report.lines), counts,
                                  timeout=QUERY_TIMEOUT_S)
        if row is None:
            existing = await conn.fetchrow(q.IMPORT_BY_SHA256, report.sha256,
                                           timeout=QUERY_TIMEOUT_S)
            return await _stored(conn, existing, replay=True)
        await conn.executemany(q.INSERT_FINDING, [
            (row["id"], seq, *_finding_row(f)) for seq, f in enumerate(findings)],
            timeout=QUERY_TIMEOUT_S)
    return StoredImport(
        id=row["id"], sha256=report.sha256, psp=report.psp, layout=report.layout,
        period=period, lines_read=len(report.lines), imported_at=row["imported_at"],
        findings=list(findings), replay=False)
