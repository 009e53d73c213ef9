"""Settlement reports from the simulator's memory, in each PSP's published CSV layout, with
knobs that plant the differences reconciliation must find.

    GET /_sim/reports/{psp}?from=&to=&drop=&amount=&currency=&chargeback=&unknown=

- `psp`: stripe (the itemized payout reconciliation layout) or adyen (Settlement details).
- `from`, `to`: unix seconds or ISO 8601; objects created in [from, to). Default: all.
- `drop=<ref>`: leave that payment out. `amount=<ref>:<minor>`: report that amount instead.
  `currency=<ref>:<CUR>`: report that currency (same minor units). `chargeback=<ref>`: add
  a chargeback line for that deposit. `unknown=<n>`: add n payments nobody made. Each may
  repeat; `<ref>` is the simulator's reference (checkout session, payment link, payout) or
  our payment id.

Settled deposits (Stripe: paid sessions; Adyen: completed links) and paid payouts (Adyen:
reversed ones add a PaidOutReversed line) are listed in creation order. Line ids derive from
the object's reference, so the same memory and the same query give the same bytes; fees are
a fixed, documented schedule (Stripe 2.9 %, Adyen markup 10 + scheme fees 2 + interchange
0.3 % of the amount, all in minor units).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from aiohttp import web

from gateway_bridge.shared.money import EXPONENTS, format_major
from psp_simulator.state import ControlError, SimObject, Simulator

# Bounds on what a query may plant: tests plant a handful.
PLANTS_MAX = 100
UNKNOWN_LINES_MAX = 100
STRIPE_FEE_PER_MILLE = 29
STRIPE_DISPUTE_FEE_MINOR = 1500
ADYEN_MARKUP_MINOR = 10
ADYEN_SCHEME_FEES_MINOR = 2
ADYEN_INTERCHANGE_PER_MILLE = 3
# Adyen writes Creation Date in the company account's zone; the simulator's is CET.
ADYEN_ZONE = timezone(timedelta(hours=1), "CET")

STRIPE_COLUMNS = (
    "balance_transaction_id", "created_utc", "available_on_utc", "currency", "gross", "fee",
    "net", "reporting_category", "source_id", "description", "customer_facing_amount",
    "customer_facing_currency", "automatic_payout_id", "payment_intent_id", "charge_id",
    "payment_metadata[payment_id]")
ADYEN_COLUMNS = (
    "Company Account", "Merchant Account", "Psp Reference", "Merchant Reference",
    "Payment Method", "Creation Date", "TimeZone", "Type", "Modification Reference",
    "Gross Currency", "Gross Debit (GC)", "Gross Credit (GC)", "Exchange Rate",
    "Net Currency", "Net Debit (NC)", "Net Credit (NC)", "Commission (NC)", "Markup (NC)",
    "Scheme Fees (NC)", "Interchange (NC)", "Payment Method Variant",
    "Modification Merchant Reference", "Batch Number")


@dataclass(slots=True)
class Plants:
    drop: set[str] = field(default_factory=set)
    amounts: dict[str, int] = field(default_factory=dict)
    currencies: dict[str, str] = field(default_factory=dict)
    chargebacks: set[str] = field(default_factory=set)
    unknown: int = 0


@dataclass(frozen=True, slots=True)
class Entry:
    """One settled object as the report shows it, after the plants."""

    obj: SimObject
    amount_minor: int
    currency: str


def _digest(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()


def _digits(*parts: str) -> str:
    return str(int(_digest(*parts), 16))[:16].rjust(16, "1")


def _time(raw: str, name: str) -> int:
    if raw.isdigit():
        return int(raw)
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise ControlError(400, f"{name}: unix seconds or ISO 8601") from None
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())


def _pair(raw: str, name: str) -> tuple[str, str]:
    ref, sep, value = raw.rpartition(":")
    if not sep or not ref or not value:
        raise ControlError(400, f"{name}: <ref>:<value>")
    return ref, value


def _plants(request: web.Request) -> Plants:
    query = request.query
    plants = Plants(drop=set(query.getall("drop", [])),
                    chargebacks=set(query.getall("chargeback", [])))
    for raw in query.getall("amount", []):
        ref, value = _pair(raw, "amount")
        if not value.isdigit() or int(value) <= 0:
            raise ControlError(400, "amount: <ref>:<positive minor units>")
        plants.amounts[ref] = int(value)
    for raw in query.getall("currency", []):
        ref, value = _pair(raw, "currency")
        if value.upper() not in EXPONENTS:
            raise ControlError(400, f"currency: one of {sorted(EXPONENTS)}")
        plants.currencies[ref] = value.upper()
    unknown = query.get("unknown", "0")
    if not unknown.isdigit() or int(unknown) > UNKNOWN_LINES_MAX:
        raise ControlError(400, f"unknown: 0..{UNKNOWN_LINES_MAX}")
    plants.unknown = int(unknown)
    planted = (len(plants.drop) + len(plants.amounts) + len(plants.currencies)
               + len(plants.chargebacks))
    if planted > PLANTS_MAX:
        raise ControlError(400, f"at most {PLANTS_MAX} planted differences")
    return plants


def _planted(refs: Iterable[str], obj: SimObject) -> str | None:
    return next((r for r in refs if r in (obj.psp_reference, obj.payment_id)), None)


def _settled(obj: SimObject) -> bool:
    if obj.kind == "payout":
        return obj.status in ("paid", "reversed")
    if obj.psp == "stripe":
        return obj.fields.get("payment_status") == "paid"
    return obj.status == "completed"


def _entries(sim: Simulator, psp: str, from_s: int, to_s: int,
             plants: Plants) -> list[Entry]:
    entries: list[Entry] = []
    for obj in list(sim.objects.values()):
        if obj.psp != psp or not from_s <= obj.created_s < to_s or not _settled(obj):
            continue
        if _planted(plants.drop, obj):
            continue
        amount_ref = _planted(plants.amounts, obj)
        currency_ref = _planted(plants.currencies, obj)
        entries.append(Entry(
            obj, plants.amounts[amount_ref] if amount_ref else obj.amount_minor,
            plants.currencies[currency_ref] if currency_ref else obj.currency))
    return entries


def _csv(columns: tuple[str, ...], rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


# --- Stripe ----------------------------------------------------------------------------------

def _stripe_row(*, ref: str, kind: str, created_s: int, currency: str, gross_minor: int,
                fee_minor: int, source_id: str, intent: str, payment_id: str,
                customer_facing: bool) -> dict[str, str]:
    created = datetime.fromtimestamp(created_s, UTC)
    major = format_major(abs(gross_minor), currency)
    return {
        "balance_transaction_id": f"txn_{_digest(kind, ref)[:24]}",
        "created_utc": created.strftime("%Y-%m-%d %H:%M:%S"),
        "available_on_utc": (created + timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S"),
        "currency": currency.lower(),
        "gross": format_major(gross_minor, currency),
        "fee": format_major(fee_minor, currency),
        "net": format_major(gross_minor - fee_minor, currency),
        "reporting_category": kind, "source_id": source_id, "description": "",
        "customer_facing_amount": major if customer_facing else "",
        "customer_facing_currency": currency.lower() if customer_facing else "",
        "automatic_payout_id": f"po_auto_{created.strftime('%Y%m%d')}",
        "payment_intent_id": intent, "charge_id": source_id if kind == "charge" else "",
        "payment_metadata[payment_id]": payment_id,
    }


def _stripe_lines(entry: Entry, plants: Plants) -> list[dict[str, str]]:
    obj, ref = entry.obj, entry.obj.psp_reference
    if obj.kind == "payout":
        return [_stripe_row(ref=ref, kind="payout", created_s=obj.created_s,
                            currency=entry.currency, gross_minor=-entry.amount_minor,
                            fee_minor=0, source_id=ref, intent="", payment_id="",
                            customer_facing=False)]
    intent = str(obj.fields.get("payment_intent") or "")
    rows = [_stripe_row(
        ref=ref, kind="charge", created_s=obj.created_s, currency=entry.currency,
        gross_minor=entry.amount_minor,
        fee_minor=entry.amount_minor * STRIPE_FEE_PER_MILLE // 1000,
        source_id=f"ch_{_digest('ch', ref)[:24]}", intent=intent, payment_id=obj.payment_id,
        customer_facing=True)]
    if _planted(plants.chargebacks, obj):
        rows.append(_stripe_row(
            ref=ref, kind="dispute", created_s=obj.created_s, currency=entry.currency,
            gross_minor=-entry.amount_minor, fee_minor=STRIPE_DISPUTE_FEE_MINOR,
            source_id=f"dp_{_digest('dp', ref)[:24]}", intent=intent,
            payment_id=obj.payment_id, customer_facing=True))
    return rows


def stripe_report(entries: list[Entry], plants: Plants, *, unknown_at_s: int) -> bytes:
    rows = [row for entry in entries for row in _stripe_lines(entry, plants)]
    for n in range(plants.unknown):
        ref = f"unknown-{n}"
        rows.append(_stripe_row(
            ref=ref, kind="charge", created_s=unknown_at_s, currency="USD", gross_minor=12_34,
            fee_minor=12_34 * STRIPE_FEE_PER_MILLE // 1000,
            source_id=f"ch_{_digest('ch', ref)[:24]}", intent=f"pi_{_digest('pi', ref)[:24]}",
            payment_id="", customer_facing=True))
    return _csv(STRIPE_COLUMNS, rows)


# --- Adyen -----------------------------------------------------------------------------------

def _adyen_row(*, merchant: str, kind: str, psp_reference: str, merchant_reference: str,
               created_s: int, currency: str, amount_minor: int, credit: bool,
               fees: bool) -> dict[str, str]:
    fee_parts = ((ADYEN_MARKUP_MINOR, ADYEN_SCHEME_FEES_MINOR,
                  amount_minor * ADYEN_INTERCHANGE_PER_MILLE // 1000) if fees else (0, 0, 0))
    net = amount_minor - sum(fee_parts) if credit else amount_minor + sum(fee_parts)
    gross_text, net_text = format_major(amount_minor, currency), format_major(net, currency)
    created = datetime.fromtimestamp(created_s, ADYEN_ZONE)
    return {
        "Company Account": "SimCompany", "Merchant Account": merchant,
        "Psp Reference": psp_reference, "Merchant Reference": merchant_reference,
        "Payment Method": "visa" if kind != "PaidOut" else "",
        "Creation Date": created.strftime("%Y-%m-%d %H:%M:%S"), "TimeZone": "CET",
        "Type": kind, "Modification Reference": _digits("mod", kind, psp_reference),
        "Gross Currency": currency, "Gross Debit (GC)": "" if credit else gross_text,
        "Gross Credit (GC)": gross_text if credit else "", "Exchange Rate": "1",
        "Net Currency": currency, "Net Debit (NC)": "" if credit else net_text,
        "Net Credit (NC)": net_text if credit else "", "Commission (NC)": "",
        "Markup (NC)": format_major(fee_parts[0], currency) if fees else "",
        "Scheme Fees (NC)": format_major(fee_parts[1], currency) if fees else "",
        "Interchange (NC)": format_major(fee_parts[2], currency) if fees else "",
        "Payment Method Variant": "visaclassic" if kind != "PaidOut" else "",
        "Modification Merchant Reference": "", "Batch Number": "1",
    }


def _adyen_lines(entry: Entry, plants: Plants, merchant: str) -> list[dict[str, str]]:
    obj = entry.obj

    def line(kind: str, psp_reference: str, *, credit: bool, fees: bool) -> dict[str, str]:
        return _adyen_row(merchant=merchant, kind=kind, psp_reference=psp_reference,
                          merchant_reference=obj.payment_id, created_s=obj.created_s,
                          currency=entry.currency, amount_minor=entry.amount_minor,
                          credit=credit, fees=fees)

    if obj.kind == "payout":
        rows = [line("PaidOut", obj.psp_reference, credit=False, fees=False)]
        if obj.status == "reversed":
            rows.append(line("PaidOutReversed", obj.psp_reference, credit=True, fees=False))
        return rows
    reference = str(obj.fields.get("payment_psp_reference") or "")
    rows = [line("Settled", reference, credit=True, fees=True)]
    if _planted(plants.chargebacks, obj):
        rows.append(line("Chargeback", reference, credit=False, fees=False))
    return rows


def adyen_report(entries: list[Entry], plants: Plants, *, merchant: str,
                 unknown_at_s: int) -> bytes:
    rows = [row for entry in entries for row in _adyen_lines(entry, plants, merchant)]
    for n in range(plants.unknown):
        rows.append(_adyen_row(
            merchant=merchant, kind="Settled", psp_reference=_digits("unknown", str(n)),
            merchant_reference=f"unknown-order-{n}", created_s=unknown_at_s, currency="EUR",
            amount_minor=12_34, credit=True, fees=True))
    return _csv(ADYEN_COLUMNS, rows)


# --- the route -------------------------------------------------------------------------------

def routes(sim: Simulator) -> list[web.RouteDef]:
    async def report(request: web.Request) -> web.Response:
        psp = request.match_info["psp"]
        if psp not in ("stripe", "adyen"):
            raise ControlError(404, f"no settlement report for {psp!r}; stripe or adyen")
        from_s = _time(request.query.get("from", "0"), "from")
        to_s = _time(request.query.get("to", str(2**40)), "to")
        plants = _plants(request)
        entries = _entries(sim, psp, from_s, to_s, plants)
        # Unknown lines are dated inside the period, so they are in the report's days.
        unknown_at_s = max(from_s, min(to_s - 1, entries[-1].obj.created_s if entries
                                       else from_s))
        if psp == "stripe":
            body = stripe_report(entries, plants, unknown_at_s=unknown_at_s)
        else:
            body = adyen_report(entries, plants, unknown_at_s=unknown_at_s,
                                merchant=sim.settings.adyen_merchant_account)
        return web.Response(body=body, content_type="text/csv", charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="settlement-{psp}.csv"'})

    return [web.get("/_sim/reports/{psp}", report)]
