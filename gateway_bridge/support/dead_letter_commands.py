"""`walletctl dead-letters list | replay`: the PSP events the inbox gave up on, and putting
them back.

A replayed event is picked up by the running bridge's inbox workers on their next poll, so
this works while the bridge is down and takes effect when it is up. `gateway-bridge
dead-letters` (deprecated) runs the same code.
"""

from __future__ import annotations

import argparse
import sys

from gateway_bridge.payments import store
from gateway_bridge.support.console import connect, print_json

# `list` prints at most this many events per call; --after pages on.
LIST_ROWS_MAX = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "replay"])
    parser.add_argument("--id", type=int, help="replay this event")
    parser.add_argument("--all", action="store_true", help="replay every dead event")
    parser.add_argument("--after", type=int, default=0, help="list events after this id")
    parser.add_argument("--limit", type=int, default=100, choices=range(1, LIST_ROWS_MAX + 1),
                        metavar=f"1..{LIST_ROWS_MAX}")
    parser.add_argument("--json", action="store_true")


async def dead_letters(args: argparse.Namespace) -> int:
    conn = await connect()
    try:
        if args.action == "list":
            rows = await store.dead_events(conn, after_id=args.after, limit=args.limit)
            if args.json:
                print_json(rows)
            else:
                for r in rows:
                    print(f"{r['id']:>8}  {r['psp']:<12} {r['psp_event_type'][:32]:<32} "
                          f"payment={r['payment_id'] or '-'}  attempts={r['attempts']}  "
                          f"{(r['last_error'] or '')[:80]}")
                print(f"{len(rows)} dead-lettered event(s)")
            return 0
        if args.id is None and not args.all:
            print("replay: give --id N or --all", file=sys.stderr)
            return 2
        ids = await store.replay_dead(conn, None if args.all else args.id)
        print(f"replayed {len(ids)} event(s): {ids}")
        return 0 if ids or args.all else 1
    finally:
        await conn.close()
