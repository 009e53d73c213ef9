"""Matching a settlement report against our records (pure: no I/O, no clock).

Every report line gets exactly one finding, and every payment the PSP should have reported
in the period but didn't gets one more (`missing_psp`). A line is tied to our payment by the
first of its references that names one (our payment id, then the PSP's references); then,
in this order, the first thing that differs decides the finding:

1. the same payment reported twice with the same kind of line   -> status_difference
2. a line of a kind we never expect for this payment direction  -> status_difference
   (a refund, a chargeback reversal, a payment line on a withdrawal, ...)
3. the currency                                                  -> currency_difference
4. our state (the PSP settled it, we have it failed; the PSP
   charged it back, we have it succeeded; ...)                   -> status_difference
5. the wallet journal (the bridge says credited or paid out, the
   wallet has no such entry)                                     -> status_difference
6. the amount (the report's, the bridge's, the wallet's)         -> amount_difference
7. otherwise                                                     -> matched

Fee lines tied to no payment are `fee` findings; transfers (the PSP paying us) are not about
any payment and give no finding. `matched` and `fee` are not differences; the others are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from gateway_bridge.reconciliation.layouts import LineKind, ReportLine


class FindingKind(StrEnum):
    MATCHED = "matched"
    MISSING_OURS = "missing_ours"          # in the report, not in our records
    MISSING_PSP = "missing_psp"            # ours (succeeded/paid in the period), not reported
    AMOUNT = "amount_difference"
    CURRENCY = "currency_difference"
    STATUS = "status_difference"
    FEE = "fee"                            # a fee line of its own


DIFFERENCES = frozenset({FindingKind.MISSING_OURS, FindingKind.MISSING_PSP,
                         FindingKind.AMOUNT, FindingKind.CURRENCY, FindingKind.STATUS})


@dataclass(frozen=True, slots=True)
class Period:
    """Half-open [from_at, to_at): our payments created in it are expected in the report."""

    from_at: datetime
    to_at: datetime

    def __post_init__(self) -> None:
        if self.from_at.tzinfo is None or self.to_at.tzinfo is None:
            raise ValueError("period bounds need a time zone")
        if self.to_at <= self.from_at:
            raise ValueError("period: 'to' must be after 'from'")

    def __contains__(self, at: datetime) -> bool:
        return self.from_at <= at < self.to_at


@dataclass(frozen=True, slots=True)
class OurPayment:
    """A bridge payment with what the wallet journal holds for it."""

    id: str
    direction: str                   # deposit | withdrawal
    state: str
    currency: str
    amount_minor: int
    charged_back_minor: int
    psp_reference: str | None
    psp_reference_alt: str | None
    created_at: datetime
    wallet_minor: int | None         # deposit credited / withdrawal committed; None: no entry
    wallet_reversed: bool = False    # the committed withdrawal came back (ReverseWithdrawal)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    line_no: int | None              # None for missing_psp
    payment_id: str | None
    psp_reference: str
    psp_type: str                    # the report's word for the line; "" for missing_psp
    currency: str
    report_amount_minor: int | None
    our_amount_minor: int | None
    settlement_currency: str
    fee_minor: int
    net_minor: int
    our_state: str | None
    note: str

    @property
    def is_difference(self) -> bool:
        return self.kind in DIFFERENCES


# The line kinds a payment may show, with the states in which we expect to see them.
_EXPECTED: dict[LineKind, tuple[str, frozenset[str]]] = {
    LineKind.PAYMENT: ("deposit", frozenset({"succeeded", "charged_back"})),
    LineKind.CHARGEBACK: ("deposit", frozenset({"charged_back"})),
    LineKind.PAYOUT: ("withdrawal", frozenset({"paid", "reversed"})),
    LineKind.PAYOUT_REVERSAL: ("withdrawal", frozenset({"reversed"})),
}
# What the PSP must report for a payment of ours created in the period, by direction.
_MUST_REPORT: dict[str, tuple[LineKind, frozenset[str]]] = {
    "deposit": (LineKind.PAYMENT, _EXPECTED[LineKind.PAYMENT][1]),
    "withdrawal": (LineKind.PAYOUT, _EXPECTED[LineKind.PAYOUT][1]),
}


def _index(payments: Iterable[OurPayment]) -> dict[str, OurPayment]:
    """Each name of a payment (our id, the PSP's references) points at it. Our ids
    (pay_ + 24 hex) can't collide with the PSP's references, and the bridge keeps a
    reference unique per PSP, so no name points at two payments."""
    by_reference: dict[str, OurPayment] = {}
    for p in payments:
        for key in (p.psp_reference_alt, p.psp_reference, p.id):
            if key:
                by_reference[key] = p
    return by_reference


def _finding(line: ReportLine, kind: FindingKind, p: OurPayment | None, note: str, *,
             our_amount_minor: int | None = None) -> Finding:
    return Finding(
        kind=kind, line_no=line.line_no, payment_id=p.id if p else None,
        psp_reference=line.reference, psp_type=line.psp_type, currency=line.currency,
        report_amount_minor=line.amount_minor, our_amount_minor=our_amount_minor,
        settlement_currency=line.settlement_currency, fee_minor=line.fee_minor,
        net_minor=line.net_minor, our_state=p.state if p else None, note=note)


def _our_amount(line: ReportLine, p: OurPayment) -> int:
    return p.charged_back_minor if line.kind is LineKind.CHARGEBACK else p.amount_minor


def _wallet_problem(line: ReportLine, p: OurPayment) -> str | None:
    if line.kind is LineKind.PAYMENT and p.wallet_minor is None:
        return f"the bridge has it {p.state} but the wallet journal holds no deposit for it"
    if line.kind is LineKind.PAYOUT and p.wallet_minor is None:
        return f"the bridge has it {p.state} but the wallet journal holds no committed payout"
    if line.kind is LineKind.PAYOUT_REVERSAL and not p.wallet_reversed:
        return "the bridge has it reversed but the wallet never took the payout back"
    return None


def _classify(line: ReportLine, p: OurPayment) -> Finding:
    expected = _EXPECTED.get(line.kind)
    if expected is None or expected[0] != p.direction:
        return _finding(line, FindingKind.STATUS, p,
                        f"report has a {line.psp_type} line for our {p.direction}, "
                        f"which we have as {p.state}")
    if line.currency != p.currency:
        return _finding(line, FindingKind.CURRENCY, p,
                        f"report currency {line.currency}, ours {p.currency}",
                        our_amount_minor=_our_amount(line, p))
    if p.state not in expected[1]:
        return _finding(line, FindingKind.STATUS, p,
                        f"report has it {line.psp_type}, we have it {p.state}",
                        our_amount_minor=_our_amount(line, p))
    problem = _wallet_problem(line, p)
    if problem:
        return _finding(line, FindingKind.STATUS, p, problem,
                        our_amount_minor=_our_amount(line, p))
    ours = _our_amount(line, p)
    if line.amount_minor != ours:
        return _finding(line, FindingKind.AMOUNT, p,
                        f"report amount {line.amount_minor}, ours {ours} (minor units)",
                        our_amount_minor=ours)
    if line.kind in (LineKind.PAYMENT, LineKind.PAYOUT) and p.wallet_minor != ours:
        return _finding(line, FindingKind.AMOUNT, p,
                        f"the wallet moved {p.wallet_minor}, the bridge and the report "
                        f"{ours} (minor units)", our_amount_minor=p.wallet_minor)
    return _finding(line, FindingKind.MATCHED, p, "", our_amount_minor=ours)


def _line_finding(line: ReportLine, by_reference: dict[str, OurPayment],
                  seen: set[tuple[str, LineKind]]) -> Finding | None:
    if line.kind is LineKind.TRANSFER:
        return None
    if line.kind is LineKind.FEE:
        return _finding(line, FindingKind.FEE, None, f"{line.psp_type} line")
    p = next((by_reference[r] for r in line.references if r in by_reference), None)
    if p is None:
        return _finding(line, FindingKind.MISSING_OURS, None,
                        f"no payment of ours for {line.psp_type} "
                        f"{line.reference or line.line_reference}")
    if (p.id, line.kind) in seen:
        return _finding(line, FindingKind.STATUS, p,
                        f"a second {line.psp_type} line for the same payment",
                        our_amount_minor=_our_amount(line, p))
    seen.add((p.id, line.kind))
    return _classify(line, p)


def _missing_psp(p: OurPayment) -> Finding:
    reference = p.psp_reference_alt or p.psp_reference or ""
    return Finding(
        kind=FindingKind.MISSING_PSP, line_no=None, payment_id=p.id, psp_reference=reference,
        psp_type="", currency=p.currency, report_amount_minor=None,
        our_amount_minor=p.amount_minor, settlement_currency="", fee_minor=0, net_minor=0,
        our_state=p.state, note=f"our {p.state} {p.direction} is not in the report")


def match(lines: Sequence[ReportLine], payments: Sequence[OurPayment],
          period: Period) -> list[Finding]:
    """Findings in a stable order: report lines in file order, then the payments the report
    lacks by creation time and id."""
    by_reference = _index(payments)
    seen: set[tuple[str, LineKind]] = set()
    findings = [f for line in lines
                if (f := _line_finding(line, by_reference, seen)) is not None]
    for p in sorted(payments, key=lambda p: (p.created_at, p.id)):
        must = _MUST_REPORT.get(p.direction)
        if (must and p.created_at in period and p.state in must[1]
                and (p.id, must[0]) not in seen):
            findings.append(_missing_psp(p))
    return findings
