"""Settlement report layouts: Stripe's itemized and Adyen's Settlement details rows read into
minor units with each currency's scale, and unreadable reports named by line and column."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway_bridge.reconciliation.layouts import LineKind, ReportError, parse

STRIPE_HEADER = ("balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,"
                 "reporting_category,source_id,description,customer_facing_amount,"
                 "customer_facing_currency,automatic_payout_id,payment_intent_id\n")


def stripe(*rows: str) -> bytes:
    return (STRIPE_HEADER + "".join(r + "\n" for r in rows)).encode()


ADYEN_HEADER = ("Company Account,Merchant Account,Psp Reference,Merchant Reference,"
                "Payment Method,Creation Date,TimeZone,Type,Modification Reference,"
                "Gross Currency,Gross Debit (GC),Gross Credit (GC),Exchange Rate,Net Currency,"
                "Net Debit (NC),Net Credit (NC),Commission (NC),Markup (NC),Scheme Fees (NC),"
                "Interchange (NC),Payment Method Variant,Batch Number\n")


def adyen(*rows: str) -> bytes:
    return (ADYEN_HEADER + "".join(r + "\n" for r in rows)).encode()


@pytest.mark.parametrize(("row", "kind", "currency", "amount", "fee", "net"), [
    ("txn_1,2024-05-01 10:00:00,2024-05-03 00:00:00,usd,25.00,0.73,24.27,charge,ch_1,,"
     "25.00,usd,po_1,pi_1", LineKind.PAYMENT, "USD", 2500, 73, 2427),
    ("txn_2,2024-05-01 10:00:00,,jpy,1000,36,964,charge,ch_2,,1000,jpy,,pi_2",
     LineKind.PAYMENT, "JPY", 1000, 36, 964),
    ("txn_3,2024-05-01 10:00:00,,btc,0.00012345,0.00000001,0.00012344,charge,ch_3,,,,,pi_3",
     LineKind.PAYMENT, "BTC", 12345, 1, 12344),
    ("txn_4,2024-05-01 10:00:00,,usd,-40.50,15.00,-55.50,dispute,dp_4,,-40.50,usd,,pi_4",
     LineKind.CHARGEBACK, "USD", 4050, 1500, -5550),
    ("txn_5,2024-05-01 10:00:00,,usd,-12.00,0,-12.00,payout,po_5,,,,,",
     LineKind.PAYOUT, "USD", 1200, 0, -1200),
    ("txn_6,2024-05-01 10:00:00,,usd,-2.00,0,-2.00,fee,fee_6,,,,,",
     LineKind.FEE, "USD", 0, 200, -200),
    ("txn_7,2024-05-01 10:00:00,,usd,1.00,0,1.00,climate_order_purchase,x_7,,,,,",
     LineKind.OTHER, "USD", 100, 0, 100),
])
def test_stripe_rows_become_minor_units(row: str, kind: LineKind, currency: str, amount: int,
                                        fee: int, net: int) -> None:
    """Stripe decimals (2-, 0- and 8-decimal currencies) become exact minor units."""
    line = parse("stripe", stripe(row)).lines[0]
    assert (line.kind, line.currency, line.amount_minor, line.fee_minor, line.net_minor) == (
        kind, currency, amount, fee, net)
    assert line.line_no == 2
    assert line.occurred_at == datetime(2024, 5, 1, 10, tzinfo=UTC)


def test_stripe_presentment_currency_is_what_the_player_paid() -> None:
    """A EUR-settled charge of 10.00 USD compares as USD 1000; its fee stays in EUR."""
    line = parse("stripe", stripe(
        "txn_1,2024-05-01 10:00:00,,eur,9.20,0.30,8.90,charge,ch_1,,10.00,usd,,pi_9")).lines[0]
    assert (line.currency, line.amount_minor) == ("USD", 1000)
    assert (line.settlement_currency, line.fee_minor, line.net_minor) == ("EUR", 30, 890)
    assert line.references == ("pi_9", "ch_1") and line.reference == "pi_9"


@pytest.mark.parametrize(("row", "kind", "currency", "amount", "fee", "net", "at"), [
    ("Co,M,8815000000000001,pay_1,visa,2024-05-01 12:00:00,CET,Settled,8815000000000002,"
     "EUR,,25.00,1,EUR,,24.78,,0.10,0.02,0.10,visaclassic,1",
     LineKind.PAYMENT, "EUR", 2500, 22, 2478, datetime(2024, 5, 1, 11, tzinfo=UTC)),
    ("Co,M,8815000000000003,pay_2,visa,2024-07-01 12:00:00,CEST,Settled,8815000000000004,"
     "JPY,,1500,1,JPY,,1485,15,,,,visaclassic,1",
     LineKind.PAYMENT, "JPY", 1500, 15, 1485, datetime(2024, 7, 1, 10, tzinfo=UTC)),
    ("Co,M,8815000000000005,pay_3,btc,2024-05-01 12:00:00,UTC,Settled,8815000000000006,"
     "BTC,,0.50000000,1,BTC,,0.49990000,0.0001,,,,,1",
     LineKind.PAYMENT, "BTC", 50_000_000, 10_000, 49_990_000, datetime(2024, 5, 1, 12,
                                                                         tzinfo=UTC)),
    ("Co,M,8815000000000001,pay_1,visa,2024-05-02 09:00:00,Europe/Amsterdam,Chargeback,"
     "8815000000000009,EUR,25.00,,1,EUR,25.00,,,,,,visaclassic,2",
     LineKind.CHARGEBACK, "EUR", 2500, 0, -2500, datetime(2024, 5, 2, 7, tzinfo=UTC)),
    ("Co,M,,,,2024-05-02 09:00:00,UTC,Fee,,,,,,EUR,5.00,,,,,,,2",
     LineKind.FEE, "EUR", 0, 500, -500, datetime(2024, 5, 2, 9, tzinfo=UTC)),
    ("Co,M,,,,2024-05-02 09:00:00,UTC,MerchantPayout,,,,,,EUR,100.00,,,,,,,2",
     LineKind.TRANSFER, "EUR", 0, 0, -10000, datetime(2024, 5, 2, 9, tzinfo=UTC)),
])
def test_adyen_rows_become_minor_units(row: str, kind: LineKind, currency: str, amount: int,
                                       fee: int, net: int, at: datetime) -> None:
    """Adyen gross (GC), fees and net (NC) in minor units; Creation Date moved to UTC."""
    line = parse("adyen", adyen(row)).lines[0]
    assert (line.kind, line.currency, line.amount_minor, line.fee_minor, line.net_minor) == (
        kind, currency, amount, fee, net)
    assert line.occurred_at == at


@pytest.mark.parametrize(("psp", "data", "line_no", "column", "words"), [
    ("stripe", b"id,amount\n1,2\n", 1, "balance_transaction_id", "missing"),
    ("adyen", stripe("txn_1,2024-05-01 10:00:00,,usd,1.00,0,1.00,charge,ch_1,,,,,"), 1,
     "Psp Reference", "missing"),
    ("stripe", stripe("txn_1,2024-05-01 10:00:00,,usd,1.005,0,1.00,charge,ch_1,,,,,"), 2,
     "gross", "more decimals"),
    ("stripe", stripe("txn_1,2024-05-01 10:00:00,,jpy,10.5,0,10.5,charge,ch_1,,,,,"), 2,
     "gross", "more decimals"),
    ("stripe", stripe("txn_1,2024-05-01 10:00:00,,usd,\"1,00\",0,1.00,charge,ch_1,,,,,"), 2,
     "gross", "separator"),
    ("stripe", stripe("txn_1,2024-05-01 10:00:00,,xyz,1.00,0,1.00,charge,ch_1,,,,,"), 2,
     "gross", "unsupported currency"),
    ("stripe", stripe("txn_1,yesterday,,usd,1.00,0,1.00,charge,ch_1,,,,,"), 2,
     "created_utc", "YYYY"),
    ("stripe", stripe("txn_1,2024-05-01 10:00:00,,usd,1.00,0,1.00,charge"), 2, None, "fields"),
    ("adyen", adyen("Co,M,1,pay_1,visa,2024-05-01 12:00:00,Mars/Olympus,Settled,2,EUR,,1.00,"
                    "1,EUR,,1.00,,,,,,1"), 2, "TimeZone", "unknown time zone"),
    ("adyen", adyen("Co,M,1,pay_1,visa,2024-05-01 12:00:00,UTC,Settled,2,EUR,1.00,1.00,"
                    "1,EUR,,1.00,,,,,,1"), 2, "Gross Credit (GC)", "both"),
    ("stripe", b"", 1, None, "empty"),
    ("stripe", b"\xff\xfe", 1, None, "UTF-8"),
])
def test_unreadable_reports_name_the_line_and_column(psp: str, data: bytes, line_no: int,
                                                     column: str | None, words: str) -> None:
    """Bad input is a ReportError that says where: line number and column name."""
    with pytest.raises(ReportError) as caught:
        parse(psp, data)
    assert (caught.value.line_no, caught.value.column) == (line_no, column)
    assert words in str(caught.value)


def test_the_report_hash_is_of_its_bytes() -> None:
    """The same bytes give the same hash; one changed byte another (idempotency's key)."""
    row = "txn_1,2024-05-01 10:00:00,,usd,1.00,0,1.00,charge,ch_1,,,,,"
    first, again = parse("stripe", stripe(row)), parse("stripe", stripe(row))
    other = parse("stripe", stripe(row.replace("1.00,0,1.00", "1.01,0,1.01")))
    assert first.sha256 == again.sha256 != other.sha256
