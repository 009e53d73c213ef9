"""`walletctl aml list | show | investigate | clear | report`: the anti-money-laundering
cases an analyst works (docs/COMPLIANCE.md).

Every change is kept in the case's history with who made it and why. Clearing the last
case that holds a player's withdrawals hands them back to the running bridge's status sync,
which pays them out. Reporting writes the suspicious-activity record, JSON and CSV: the
player, the rule and what it saw, the analyst's narrative, and every payment of the case
with its wallet journal id. The journal ids are looked up in the wallet when
WALLETCTL_WALLET_ADDR/TOKEN (a token with the read scope) and --wallet-caller (the bridge's
caller name there) are given.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from gateway_bridge.aml import store as aml_store
from gateway_bridge.aml.rules import OPEN_STATES, CaseRefused, CaseState, transition
from gateway_bridge.payments import store as payment_store
from gateway_bridge.payments.model import Action, wallet_key
from gateway_bridge.support.console import connect, print_json
from gateway_bridge.wallet.client import WalletClient, WalletRefused, WalletUnavailable
from service_kit.settings import EnvReader, read_secret

LIST_ROWS_MAX = 1000
ACTIONS = {"investigate": CaseState.INVESTIGATING, "clear": CaseState.CLEARED,
           "report": CaseState.REPORTED}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "show", *ACTIONS])
    parser.add_argument("id", type=int, nargs="?", default=None)
    parser.add_argument("--state", default="open",
                        choices=["open", "investigating", "cleared", "reported", "all"],
                        help="list: open (with investigating), one state, or all")
    parser.add_argument("--note", default="", help="investigate/clear: why")
    parser.add_argument("--narrative", default="",
                        help="report: the analyst's narrative for the record")
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="report: where sar-<id>.json and .csv go")
    parser.add_argument("--wallet-caller", default="",
                        help="report: the bridge's caller name in the wallet, to look up "
                             "journal ids")
    parser.add_argument("--release", action="store_true",
                        help="report: also release the player's held withdrawals (a "
                             "compliance decision; by default a reported player's "
                             "withdrawals stay held)")
    parser.add_argument("--limit", type=int, default=100, choices=range(1, LIST_ROWS_MAX + 1),
                        metavar=f"1..{LIST_ROWS_MAX}")


def check(args: argparse.Namespace) -> str | None:
    if args.action == "list":
        return None
    if args.id is None:
        return f"aml {args.action}: give the case id"
    if args.action in ("investigate", "clear") and not args.note.strip():
        return f"aml {args.action}: give --note TEXT (it is kept in the history)"
    if args.action == "report" and not args.narrative.strip():
        return "aml report: give --narrative TEXT (it goes in the record)"
    return None


async def run(args: argparse.Namespace) -> int:
    conn = await connect()
    try:
        if args.action == "list":
            states = ([s.value for s in CaseState] if args.state == "all"
                      else [s.value for s in OPEN_STATES] if args.state == "open"
                      else [args.state])
            print_json([c.to_json() for c in await aml_store.cases(conn, states, args.limit)])
            return 0
        if args.action == "show":
            found = await aml_store.case(conn, args.id)
            if found is None:
                print(f"no AML case {args.id}", file=sys.stderr)
                return 1
            print_json({**found.to_json(), "history": await aml_store.history(conn, args.id),
                        "payments": await aml_store.case_payments(conn, found.payment_ids)})
            return 0
        return await _move(conn, args)
    finally:
        await conn.close()


async def _move(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    to = ACTIONS[args.action]
    found = await aml_store.case(conn, args.id)
    if found is not None and found.state is CaseState.REPORTED and to is CaseState.REPORTED:
        # Reported already: the record is written again (a first write that failed).
        paths = await _write_record(conn, found, args)
        print(f"suspicious-activity record: {paths[0]} and {paths[1]}")
        return 0
    async with conn.transaction(isolation="read_committed"):
        if found is not None:
            # The player's AML lock: a withdrawal being held now is seen and released.
            await aml_store.lock_player(conn, found.player_id)
        found = await aml_store.case(conn, args.id, lock=True)
        if found is None:
            print(f"no AML case {args.id}", file=sys.stderr)
            return 1
        try:
            transition(found.state, to)
        except CaseRefused as err:
            print(f"{err.code}: {err.message}", file=sys.stderr)
            return 1
        note = args.narrative if to is CaseState.REPORTED else args.note
        await aml_store.set_state(conn, found, to, narrative=args.narrative or found.narrative,
                                  actor=args.actor, note=note)
        released: list[str] = []
        release = to is CaseState.CLEARED or (to is CaseState.REPORTED and args.release)
        if release and not await aml_store.holding_cases(conn, found.player_id):
            # No case holds the player any more: their held withdrawals go on.
            released = await payment_store.release_aml_held(conn, found.player_id)
    print(f"case {found.id} is {to.value}"
          + (f"; withdrawals released: {', '.join(released)}" if released else ""))
    if to is CaseState.REPORTED:
        after = await aml_store.case(conn, found.id)
        assert after is not None
        paths = await _write_record(conn, after, args)
        print(f"suspicious-activity record: {paths[0]} and {paths[1]}")
    return 0


def _money_key(p: dict[str, Any]) -> str:
    """The wallet key of the entry that moved a payment's money: a deposit's credit, a
    paid withdrawal's commit, else its reserve."""
    if p["direction"] == "deposit":
        return wallet_key(Action.DEPOSIT, p["id"])
    return wallet_key(Action.COMMIT if p["state"] == "paid" else Action.RESERVE, p["id"])


async def _journal_ids(payments: list[dict[str, Any]], caller: str) -> dict[str, str | None]:
    """Payment id -> the wallet journal id of its money movement, when the wallet can say."""
    found: dict[str, str | None] = {p["id"]: None for p in payments}
    r = EnvReader(os.environ)
    token = read_secret(os.environ, r, "WALLETCTL_WALLET_TOKEN", required=False)
    addr = os.environ.get("WALLETCTL_WALLET_ADDR", "")
    if not (caller and token and addr):
        return found
    wallet = WalletClient(addr=addr, token=token, timeout_ms=5000,
                          tls_ca_file=os.environ.get("WALLETCTL_WALLET_TLS_CA_FILE", ""))
    try:
        for p in payments:
            found[p["id"]] = await wallet.transaction_id(key=_money_key(p), caller=caller)
    except (WalletRefused, WalletUnavailable) as err:
        print(f"journal ids not looked up: {err}", file=sys.stderr)
    finally:
        await wallet.close()
    return found


async def _write_record(conn: asyncpg.Connection, c: aml_store.Case,
                        args: argparse.Namespace) -> tuple[Path, Path]:
    payments = await aml_store.case_payments(conn, c.payment_ids)
    journal = await _journal_ids(payments, args.wallet_caller)
    rows = [{**p, "wallet_journal_id": journal[p["id"]], "wallet_key": _money_key(p)}
            for p in payments]
    record = {"case": c.to_json(), "player_id": c.player_id, "rule": c.rule,
              "detail": c.detail, "narrative": c.narrative,
              "reported_by": args.actor, "reported_at": datetime.now(UTC).isoformat(),
              "transactions": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"sar-{c.id}.json"
    json_path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    buffer = io.StringIO()
    fields = ["case_id", "player_id", "rule", "id", "direction", "state", "psp", "method",
              "currency", "amount_minor", "settled_minor", "psp_reference", "withdrawal_id",
              "wallet_journal_id", "wallet_key", "created_at", "narrative"]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "case_id": c.id, "player_id": c.player_id, "rule": c.rule,
                         "narrative": c.narrative})
    csv_path = args.out / f"sar-{c.id}.csv"
    csv_path.write_text(buffer.getvalue())
    return json_path, csv_path
