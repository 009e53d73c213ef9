"""PSP settlement reports, read in each PSP's published CSV layout (pure: bytes in, lines out).

- **Stripe**: the itemized reports of the Payout reconciliation and Balance sections
  (`payout_reconciliation.itemized.*`, `balance_change_from_activity.itemized.*`): one
  balance transaction a row, `gross`/`fee`/`net` as signed decimal strings in the settlement
  `currency` (lower case), `reporting_category` saying what moved. When the row has
  `customer_facing_amount`/`customer_facing_currency`, that is what the player paid, so that
  is what is compared with our payment; fees stay in the settlement currency.
- **Adyen**: the Settlement details report: one journal entry a row, `Type` saying what it is
  (Settled, Refunded, Chargeback, Fee, MerchantPayout, ...), the gross in the gross currency
  (GC, what the shopper paid) and the net and the fees (Commission, Markup, Scheme Fees,
  Interchange) in the net currency (NC), `Creation Date` in the account's `TimeZone`.

Decimal strings become integer minor units here, at the edge, with the currency's scale
(`shared.money.to_minor`): never a float, never a silent rounding. Anything we can't read
exactly is a `ReportError` naming the line and the column, so the caller can say where.
Columns we don't use are ignored, which is how both PSPs ask integrators to read reports
that gain columns over time.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway_bridge.shared.money import AmountError, to_minor

# A month of a busy merchant's settlement lines fits well under both; past them the file is
# refused rather than held in memory (the whole file is hashed and parsed at once).
REPORT_BYTES_MAX = 64 * 1024 * 1024
REPORT_LINES_MAX = 200_000
# csv's own per-field cap (128 KiB) is far above any report field; keep it explicit.
FIELD_CHARS_MAX = 4096
PSPS = ("stripe", "adyen")


class LineKind(StrEnum):
    PAYMENT = "payment"                          # a deposit captured / settled
    REFUND = "refund"
    CHARGEBACK = "chargeback"
    CHARGEBACK_REVERSAL = "chargeback_reversal"
    PAYOUT = "payout"                            # a withdrawal paid out to a player
    PAYOUT_REVERSAL = "payout_reversal"          # a paid payout that came back
    FEE = "fee"                                  # a fee line of its own, tied to no payment
    TRANSFER = "transfer"                        # the PSP paying us (settlement to our bank)
    OTHER = "other"                              # a category we don't model


class ReportError(ValueError):
    """The report can't be read: names the line (1 = the header) and column when known."""

    def __init__(self, message: str, *, line_no: int | None = None,
                 column: str | None = None) -> None:
        where = []
        if line_no is not None:
            where.append(f"line {line_no}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.line_no = line_no
        self.column = column


@dataclass(frozen=True, slots=True)
class ReportLine:
    line_no: int
    kind: LineKind
    psp_type: str                 # the PSP's own word: reporting_category or Type
    references: tuple[str, ...]   # what may name our payment, best first
    reference: str                # shown to people: the PSP's reference of the payment
    line_reference: str           # the line's own id (balance transaction, modification)
    amount_minor: int             # what the player paid or received, > 0 (0 on fee lines)
    currency: str                 # ... in this currency
    fee_minor: int                # fees of this line, in settlement_currency
    net_minor: int                # signed, as the PSP books it, in settlement_currency
    settlement_currency: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Report:
    psp: str
    layout: str
    sha256: str
    lines: tuple[ReportLine, ...]

    @property
    def first_at(self) -> datetime | None:
        return min((line.occurred_at for line in self.lines), default=None)

    @property
    def last_at(self) -> datetime | None:
        return max((line.occurred_at for line in self.lines), default=None)


Row = Mapping[str, str]


# --- shared field readers ------------------------------------------------------------------

def _text(row: Row, column: str) -> str:
    return (row.get(column) or "").strip()


def _required(row: Row, column: str, line_no: int) -> str:
    value = _text(row, column)
    if not value:
        raise ReportError("value required", line_no=line_no, column=column)
    return value


def _currency(row: Row, column: str, line_no: int) -> str:
    return _required(row, column, line_no).upper()


def _minor(row: Row, column: str, currency: str, line_no: int, *,
           required: bool = False) -> int:
    """A decimal string in major units -> minor units of `currency`; empty is 0 unless
    required. A comma decimal separator is refused, not guessed."""
    raw = _text(row, column)
    if not raw:
        if required:
            raise ReportError("amount required", line_no=line_no, column=column)
        return 0
    if "," in raw or raw.lower() in ("nan", "inf", "-inf", "infinity"):
        raise ReportError(f"not a decimal amount with '.' separator: {raw!r}",
                          line_no=line_no, column=column)
    try:
        return to_minor(raw, currency)
    except AmountError as exc:
        raise ReportError(f"{exc} ({raw!r})", line_no=line_no, column=column) from None


def _timestamp(raw: str, tz: timezone | ZoneInfo, line_no: int, column: str) -> datetime:
    """`YYYY-MM-DD HH:MM:SS` (both PSPs), or a date alone, in the given zone -> UTC."""
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            naive = datetime.strptime(raw, fmt)
        except ValueError:
            continue
        return naive.replace(tzinfo=tz).astimezone(UTC)
    raise ReportError(f"not a 'YYYY-MM-DD HH:MM:SS' time: {raw!r}", line_no=line_no,
                      column=column)


def _references(*values: str) -> tuple[str, ...]:
    seen: list[str] = []
    for value in values:
        if value and value not in seen:
            seen.append(value)
    return tuple(seen)


# --- Stripe ----------------------------------------------------------------------------------

STRIPE_LAYOUT = "stripe.itemized"
STRIPE_REQUIRED = ("balance_transaction_id", "currency", "gross", "fee", "net",
                   "reporting_category", "source_id")
STRIPE_CREATED = ("created_utc", "created")  # the first present is used; `created` as UTC
STRIPE_METADATA_PAYMENT_ID = "payment_metadata[payment_id]"
STRIPE_KINDS: dict[str, LineKind] = {
    "charge": LineKind.PAYMENT, "refund": LineKind.REFUND,
    "dispute": LineKind.CHARGEBACK, "dispute_reversal": LineKind.CHARGEBACK_REVERSAL,
    "payout": LineKind.PAYOUT, "payout_reversal": LineKind.PAYOUT_REVERSAL,
    "fee": LineKind.FEE, "tax": LineKind.FEE,
}


def _stripe_check_header(header: list[str]) -> None:
    missing = [c for c in STRIPE_REQUIRED if c not in header]
    if not any(c in header for c in STRIPE_CREATED):
        missing.append(STRIPE_CREATED[0])
    if missing:
        raise ReportError("not Stripe's itemized balance / payout reconciliation layout: "
                          f"missing {', '.join(missing)}", line_no=1, column=missing[0])


def _stripe_line(row: Row, line_no: int) -> ReportLine:
    settlement = _currency(row, "currency", line_no)
    gross = _minor(row, "gross", settlement, line_no, required=True)
    category = _required(row, "reporting_category", line_no)
    kind = STRIPE_KINDS.get(category, LineKind.OTHER)
    amount, currency = abs(gross), settlement
    if _text(row, "customer_facing_amount") and _text(row, "customer_facing_currency"):
        currency = _currency(row, "customer_facing_currency", line_no)
        amount = abs(_minor(row, "customer_facing_amount", currency, line_no))
    created_column = next(c for c in STRIPE_CREATED if c in row)
    intent, source = _text(row, "payment_intent_id"), _required(row, "source_id", line_no)
    return ReportLine(
        line_no=line_no, kind=kind, psp_type=category,
        references=_references(_text(row, STRIPE_METADATA_PAYMENT_ID), intent, source,
                               _text(row, "charge_id")),
        reference=intent or source,
        line_reference=_required(row, "balance_transaction_id", line_no),
        amount_minor=0 if kind is LineKind.FEE else amount, currency=currency,
        fee_minor=(abs(gross) if kind is LineKind.FEE
                   else _minor(row, "fee", settlement, line_no)),
        net_minor=_minor(row, "net", settlement, line_no, required=True),
        settlement_currency=settlement,
        occurred_at=_timestamp(_required(row, created_column, line_no), UTC, line_no,
                               created_column))


# --- Adyen -----------------------------------------------------------------------------------

ADYEN_LAYOUT = "adyen.settlement_details"
ADYEN_REQUIRED = ("Psp Reference", "Merchant Reference", "Creation Date", "TimeZone", "Type",
                  "Gross Currency", "Gross Debit (GC)", "Gross Credit (GC)", "Net Currency",
                  "Net Debit (NC)", "Net Credit (NC)")
# Summed into the line's fee when present; Adyen's own docs spell the scheme one both ways.
ADYEN_FEE_COLUMNS = ("Commission (NC)", "Markup (NC)", "Scheme Fees (NC)",
                     "Schemes Fees (NC)", "Interchange (NC)")
ADYEN_KINDS: dict[str, LineKind] = {
    "Settled": LineKind.PAYMENT, "SettledBulk": LineKind.PAYMENT,
    "Refunded": LineKind.REFUND, "RefundedBulk": LineKind.REFUND,
    "Chargeback": LineKind.CHARGEBACK, "SecondChargeback": LineKind.CHARGEBACK,
    "ChargebackReversed": LineKind.CHARGEBACK_REVERSAL,
    "PaidOut": LineKind.PAYOUT, "PaidOutReversed": LineKind.PAYOUT_REVERSAL,
    "Fee": LineKind.FEE, "MiscCosts": LineKind.FEE, "PaymentCost": LineKind.FEE,
    "InvoiceDeduction": LineKind.FEE,
    "MerchantPayout": LineKind.TRANSFER, "Balancetransfer": LineKind.TRANSFER,
}
# Abbreviations Adyen writes in TimeZone, as fixed offsets (minutes east of UTC). An IANA
# name (Europe/Amsterdam) is accepted too; anything else is refused, never guessed.
TIMEZONE_OFFSETS_MIN: dict[str, int] = {
    "UTC": 0, "GMT": 0, "WET": 0, "WEST": 60, "BST": 60, "CET": 60, "CEST": 120,
    "EET": 120, "EEST": 180, "MSK": 180, "EST": -300, "EDT": -240, "PST": -480,
    "PDT": -420, "BRT": -180, "SGT": 480, "HKT": 480, "JST": 540, "AEST": 600, "AEDT": 660,
}


def _zone(raw: str, line_no: int) -> timezone | ZoneInfo:
    if raw in TIMEZONE_OFFSETS_MIN:
        return timezone(timedelta(minutes=TIMEZONE_OFFSETS_MIN[raw]), raw)
    if "/" in raw:
        try:
            return ZoneInfo(raw)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise ReportError(f"unknown time zone {raw!r}", line_no=line_no, column="TimeZone")


def _adyen_check_header(header: list[str]) -> None:
    missing = [c for c in ADYEN_REQUIRED if c not in header]
    if missing:
        raise ReportError("not Adyen's Settlement details layout: missing "
                          f"{', '.join(missing)}", line_no=1, column=missing[0])


def _debit_or_credit(row: Row, prefix: str, suffix: str, currency: str,
                     line_no: int) -> int:
    """Credit - debit; a row with both filled is refused (Adyen fills one)."""
    debit_col, credit_col = f"{prefix} Debit ({suffix})", f"{prefix} Credit ({suffix})"
    if _text(row, debit_col) and _text(row, credit_col):
        raise ReportError("both debit and credit are filled", line_no=line_no,
                          column=credit_col)
    return (_minor(row, credit_col, currency, line_no)
            - _minor(row, debit_col, currency, line_no))


def _adyen_line(row: Row, line_no: int) -> ReportLine:
    psp_type = _required(row, "Type", line_no)
    kind = ADYEN_KINDS.get(psp_type, LineKind.OTHER)
    settlement = _currency(row, "Net Currency", line_no)
    net = _debit_or_credit(row, "Net", "NC", settlement, line_no)
    if kind in (LineKind.FEE, LineKind.TRANSFER):
        amount, currency, fee = 0, settlement, -net if kind is LineKind.FEE else 0
    else:
        currency = _currency(row, "Gross Currency", line_no)
        amount = abs(_debit_or_credit(row, "Gross", "GC", currency, line_no))
        if amount == 0:
            raise ReportError("gross amount required", line_no=line_no,
                              column="Gross Credit (GC)")
        fee = sum(_minor(row, c, settlement, line_no) for c in ADYEN_FEE_COLUMNS)
    psp_reference = _text(row, "Psp Reference")
    zone = _zone(_required(row, "TimeZone", line_no), line_no)
    return ReportLine(
        line_no=line_no, kind=kind, psp_type=psp_type,
        references=_references(_text(row, "Merchant Reference"), psp_reference),
        reference=psp_reference,
        line_reference=_text(row, "Modification Reference") or _text(row, "Batch Number"),
        amount_minor=amount, currency=currency, fee_minor=fee, net_minor=net,
        settlement_currency=settlement,
        occurred_at=_timestamp(_required(row, "Creation Date", line_no), zone, line_no,
                               "Creation Date"))


# --- reading a file --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Layout:
    name: str
    check_header: Callable[[list[str]], None]
    read_line: Callable[[Row, int], ReportLine]


LAYOUTS: dict[str, _Layout] = {
    "stripe": _Layout(STRIPE_LAYOUT, _stripe_check_header, _stripe_line),
    "adyen": _Layout(ADYEN_LAYOUT, _adyen_check_header, _adyen_line),
}


def _decode(data: bytes) -> str:
    if len(data) > REPORT_BYTES_MAX:
        raise ReportError(f"report larger than {REPORT_BYTES_MAX} bytes")
    try:
        return data.decode("utf-8-sig")  # spreadsheet exports start with a BOM
    except UnicodeDecodeError as exc:
        line_no = data[:exc.start].count(b"\n") + 1
        raise ReportError("not UTF-8 text", line_no=line_no) from None


def parse(psp: str, data: bytes) -> Report:
    """The report in `psp`'s layout; ReportError on the first thing that can't be read."""
    layout = LAYOUTS.get(psp)
    if layout is None:
        raise ReportError(f"unknown psp {psp!r}; one of {', '.join(PSPS)}")
    reader = csv.reader(io.StringIO(_decode(data), newline=""), strict=True)
    lines: list[ReportLine] = []
    try:
        header = [name.strip() for name in next(reader, [])]
        if not header or header == [""]:
            raise ReportError("empty report: no header", line_no=1)
        layout.check_header(header)
        for raw in reader:
            if not any(cell.strip() for cell in raw):
                continue  # trailing blank lines
            line_no = reader.line_num
            if len(raw) != len(header):
                raise ReportError(f"{len(raw)} fields, the header has {len(header)}",
                                  line_no=line_no)
            if any(len(cell) > FIELD_CHARS_MAX for cell in raw):
                raise ReportError(f"a field longer than {FIELD_CHARS_MAX} characters",
                                  line_no=line_no)
            if len(lines) >= REPORT_LINES_MAX:
                raise ReportError(f"more than {REPORT_LINES_MAX} lines", line_no=line_no)
            lines.append(layout.read_line(dict(zip(header, raw, strict=True)), line_no))
    except csv.Error as exc:
        raise ReportError(f"malformed CSV: {exc}", line_no=reader.line_num) from None
    return Report(psp=psp, layout=layout.name, sha256=hashlib.sha256(data).hexdigest(),
                  lines=tuple(lines))
