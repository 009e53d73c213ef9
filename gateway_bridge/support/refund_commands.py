"""`walletctl refunds list | retry | done`: refunds owed at a PSP a routed payment left
(docs/ROUTING.md, "Late captures").

The bridge makes them itself; support steps in when one failed (the PSP refused it, or did
not answer for an hour): `retry` hands it back to the refund worker (the running bridge's
status sync picks it up on its next pass), `done` records a refund support made at the PSP
itself, with the PSP's reference.
"""

from __future__ import annotations

import argparse
import sys

from gateway_bridge.payments import refunds, store
from gateway_bridge.support.console import connect, print_json

LIST_ROWS_MAX = 1000
STATES = ("owed", "requested", "failed", "refunded")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "retry", "done"])
    parser.add_argument("--state", choices=STATES, default="failed", help="list: this state")
    parser.add_argument("--id", type=int, help="retry/done: the refund")
    parser.add_argument("--reference", default="",
                        help="done: the PSP's reference of the refund made by hand")
    parser.add_argument("--reason", default="", help="retry/done: why (kept in the history)")
    parser.add_argument("--limit", type=int, default=100, choices=range(1, LIST_ROWS_MAX + 1),
                        metavar=f"1..{LIST_ROWS_MAX}")
    parser.add_argument("--json", action="store_true")


def check(args: argparse.Namespace) -> str | None:
    """What argparse can't check alone; a message when something is missing."""
    if args.action == "list":
        return None
    if args.id is None or not args.reason.strip():
        return f"refunds {args.action}: give --id N and --reason TEXT"
    if args.action == "done" and not args.reference.strip():
        return "refunds done: give --reference (the PSP's refund reference)"
    return None


async def run(args: argparse.Namespace) -> int:
    conn = await connect()
    try:
        if args.action == "list":
            rows = await store.refunds_in_state(conn, args.state, limit=args.limit)
            if args.json:
                print_json([{"id": r.id, "payment_id": r.payment_id, **r.to_json()}
                            for r in rows])
            else:
                for r in rows:
                    print(f"{r.id:>8}  {r.psp:<12} {r.psp_reference:<28} "
                          f"{r.amount_minor:>12} {r.currency}  payment={r.payment_id}  "
                          f"attempts={r.attempts}  {(r.last_error or '')[:80]}")
                print(f"{len(rows)} {args.state} refund(s)")
            return 0
        if args.action == "retry":
            found = await refunds.reopen(conn, args.id, actor=args.actor, reason=args.reason)
            verb = "handed back to the refund worker"
        else:
            found = await refunds.refunded_by_hand(conn, args.id, reference=args.reference,
                                                   actor=args.actor, reason=args.reason)
            verb = "recorded as refunded by hand"
        if found is None:
            print(f"refund {args.id}: no such failed refund", file=sys.stderr)
            return 1
        print(f"refund {found.id} at {found.psp} ({found.psp_reference}, payment "
              f"{found.payment_id}) {verb}")
        return 0
    finally:
        await conn.close()
