"""The matcher alone (no database): each kind of difference planted in a report is found,
a clean report is all matched, and the summary counts and totals what it found."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway_bridge.reconciliation import output
from gateway_bridge.reconciliation.layouts import LineKind, ReportLine
from gateway_bridge.reconciliation.matcher import (
    FindingKind,
    OurPayment,
    Period,
    match,
)

AT = datetime(2024, 5, 1, 10, tzinfo=UTC)
PERIOD = Period(datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 2, tzinfo=UTC))


def ours(n: int, *, direction: str = "deposit", state: str = "succeeded",
         amount_minor: int = 25_00, **changes: object) -> OurPayment:
    p = OurPayment(id=f"pay_{n:024x}", direction=direction, state=state, currency="USD",
                   amount_minor=amount_minor, charged_back_minor=0,
                   psp_reference=f"cs_{n}", psp_reference_alt=f"pi_{n}",
                   created_at=AT, wallet_minor=amount_minor)
    return replace(p, **changes)  # type: ignore[arg-type]


def line(n: int, *, kind: LineKind = LineKind.PAYMENT, amount_minor: int = 25_00,
         currency: str = "USD", psp_type: str = "charge", line_no: int | None = None,
         fee_minor: int = 72) -> ReportLine:
    return ReportLine(line_no=line_no or n + 2, kind=kind, psp_type=psp_type,
                      references=(f"pi_{n}", f"ch_{n}"), reference=f"pi_{n}",
                      line_reference=f"txn_{n}", amount_minor=amount_minor, currency=currency,
                      fee_minor=fee_minor, net_minor=amount_minor - fee_minor,
                      settlement_currency=currency, occurred_at=AT)


def kinds(lines: list[ReportLine], payments: list[OurPayment]) -> list[FindingKind]:
    return [f.kind for f in match(lines, payments, PERIOD)]


def test_a_clean_report_is_all_matched() -> None:
    """Every line names a payment of ours with its amount, currency and state: all matched."""
    payments = [ours(1), ours(2), ours(3, direction="withdrawal", state="paid")]
    lines = [line(1), line(2), line(3, kind=LineKind.PAYOUT, psp_type="payout")]
    assert kinds(lines, payments) == [FindingKind.MATCHED] * 3


@pytest.mark.parametrize(("lines", "payments", "expected"), [
    ([line(1), line(9)], [ours(1)], [FindingKind.MATCHED, FindingKind.MISSING_OURS]),
    ([line(1)], [ours(1), ours(2)], [FindingKind.MATCHED, FindingKind.MISSING_PSP]),
    ([line(1, amount_minor=24_00)], [ours(1)], [FindingKind.AMOUNT]),
    ([line(1, currency="EUR")], [ours(1)], [FindingKind.CURRENCY]),
    ([line(1)], [ours(1, state="failed", wallet_minor=None)], [FindingKind.STATUS]),
    ([line(1), line(1, kind=LineKind.CHARGEBACK, psp_type="dispute", line_no=9)], [ours(1)],
     [FindingKind.MATCHED, FindingKind.STATUS]),
    ([line(1), line(1, kind=LineKind.REFUND, psp_type="refund", line_no=9)], [ours(1)],
     [FindingKind.MATCHED, FindingKind.STATUS]),
    ([line(1)], [ours(1, wallet_minor=None)], [FindingKind.STATUS]),
    ([line(1)], [ours(1, wallet_minor=20_00)], [FindingKind.AMOUNT]),
    ([line(1), line(1, line_no=9)], [ours(1)], [FindingKind.MATCHED, FindingKind.STATUS]),
    ([line(1, kind=LineKind.FEE, psp_type="fee", amount_minor=0)], [], [FindingKind.FEE]),
    ([line(1, kind=LineKind.TRANSFER, psp_type="MerchantPayout")], [], []),
], ids=["missing_ours", "missing_psp", "amount", "currency", "settled_but_failed",
        "chargeback_we_lack", "refund_we_lack", "no_wallet_entry", "wallet_amount",
        "reported_twice", "fee_line", "transfer_skipped"])
def test_each_planted_difference_is_found(lines: list[ReportLine],
                                          payments: list[OurPayment],
                                          expected: list[FindingKind]) -> None:
    """One planted difference gives exactly the finding of its kind."""
    assert kinds(lines, payments) == expected


def test_a_recorded_chargeback_matches_its_dispute_line() -> None:
    """A chargeback we applied, reported with the same amount: matched, not a difference."""
    p = ours(1, state="charged_back", charged_back_minor=25_00)
    dispute = line(1, kind=LineKind.CHARGEBACK, psp_type="dispute", line_no=9)
    assert kinds([line(1), dispute], [p]) == [FindingKind.MATCHED, FindingKind.MATCHED]


def test_missing_psp_only_for_payments_in_the_period_and_final() -> None:
    """Pending payments, and payments created outside the period, are not expected."""
    early = ours(2, created_at=AT - timedelta(days=3))
    pending = ours(3, state="pending", wallet_minor=None)
    assert kinds([line(1)], [ours(1), early, pending]) == [FindingKind.MATCHED]


def test_summary_counts_every_kind_and_totals_per_currency() -> None:
    """Counts list every kind (zeros too); totals are minor units per currency."""
    findings = match([line(1), line(9), line(2, amount_minor=24_00),
                      line(5, kind=LineKind.FEE, psp_type="fee", amount_minor=0,
                           fee_minor=300)],
                     [ours(1), ours(2), ours(4)], PERIOD)
    data = output.summary(findings, report={})
    assert data["counts"] == {"matched": 1, "missing_ours": 1, "missing_psp": 1,
                              "amount_difference": 1, "currency_difference": 0,
                              "status_difference": 0, "fee": 1}
    assert data["differences"] == 3
    usd = data["currencies"]["USD"]
    assert usd["fee_minor"] == 72 * 3 + 300
    assert usd["missing_ours_minor"] == 25_00 and usd["missing_psp_minor"] == 25_00
    assert usd["amount_difference_minor"] == -1_00
    text = output.findings_csv(findings)
    assert text.splitlines()[0] == ",".join(output.CSV_COLUMNS)
    assert len(text.splitlines()) == 1 + len(findings)
