"""`walletctl payment find | show | sync | resolve`: a payment by any reference, one payment
with its history, a status sync forced now, a stuck payment settled by hand.

They read and write the bridge's database directly; money moves only through the inbox,
whose events the running bridge's workers apply. `gateway-bridge payment`, `find-payment`
and `sync-payment` (deprecated) run `show`, `find` and `sync` from here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from gateway_bridge import config
from gateway_bridge.incidents import store as incidents
from gateway_bridge.payments import store
from gateway_bridge.payments.status_sync import poll_ref
from gateway_bridge.payments.view import payment_view
from gateway_bridge.psp.base import PspError
from gateway_bridge.psp.registry import build_adapters
from gateway_bridge.support import resolution
from gateway_bridge.support.console import actor_default, connect, print_json

# `find` prints at most this many payments (a reference shared by more is not one payment).
FIND_ROWS_MAX = 20
# How long `resolve` waits for the running bridge to apply the settlement.
APPLY_WAIT_S_MAX = 120
# `resolve` asks the inbox this often whether the settlement has been applied.
APPLY_POLL_S = 0.2


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    """`payment sync`'s arguments (and the deprecated `gateway-bridge sync-payment`'s)."""
    parser.add_argument("payment_id")
    parser.add_argument("--reason", required=True, help="why (kept in the payment's history)")
    parser.add_argument("--actor", default=actor_default(), help="who (kept in the record)")


async def find_payment(args: argparse.Namespace) -> int:
    """Payments matching any reference support has: ours, the PSP's, the withdrawal id, the
    cashier's Idempotency-Key."""
    conn = await connect()
    try:
        found = await store.payments_by_any_reference(conn, args.reference, FIND_ROWS_MAX)
        print_json([payment_view(p, await store.history(conn, p.id),
                                 refunds=await store.refunds_of(conn, p.id)) for p in found])
        return 0 if found else 1
    finally:
        await conn.close()


async def show_payment(args: argparse.Namespace) -> int:
    conn = await connect()
    try:
        p = await store.payment(conn, args.payment_id)
        if p is None:
            print(f"no payment {args.payment_id}", file=sys.stderr)
            return 1
        print_json(payment_view(p, await store.history(conn, p.id),
                                refunds=await store.refunds_of(conn, p.id)))
        return 0
    finally:
        await conn.close()


async def sync_payment(args: argparse.Namespace, settings: config.Settings) -> int:
    """Ask the PSP now about one payment (timed out ones included) and put its answer in the
    inbox, where the running bridge's workers apply it like any poll; recorded in the
    payment's history with who and why."""
    adapters = build_adapters(settings.psps)
    conn = await connect()
    try:
        p = await store.payment(conn, args.payment_id)
        if p is None:
            print(f"no payment {args.payment_id}", file=sys.stderr)
            return 1
        adapter = adapters.get(p.psp)
        if adapter is None or not p.psp_reference:
            print(f"{p.id}: nothing to ask {p.psp} about yet (no PSP reference)",
                  file=sys.stderr)
            return 1
        try:
            event = await adapter.fetch_status(poll_ref(p))
        except PspError as err:
            print(f"{p.psp} did not answer: {err.message}", file=sys.stderr)
            return 1
        async with conn.transaction(isolation="read_committed"):
            if event is None:
                said = "nothing it can say about this payment"
            else:
                stored = await store.insert_event(conn, event, source="poll")
                said = event.psp_event_type + (f" (inbox event {stored})" if stored is not None
                                               else " (already known)")
            await store.add_history(conn, p, from_state=p.state, source="support",
                                   note=f"status sync forced by {args.actor}: {args.reason}; "
                                        f"{p.psp} says {said}")
        print(f"{p.id} ({p.state.value}): {p.psp} says {said}")
        return 0
    finally:
        await conn.close()
        for a in adapters.values():
            await a.close()


async def resolve_payment(args: argparse.Namespace) -> int:
    conn = await connect()
    try:
        try:
            async with conn.transaction(isolation="read_committed"):
                done = await resolution.resolve(
                    conn, args.payment_id, resolution.Outcome(args.outcome), actor=args.actor,
                    reason=args.reason, incident_id=args.incident)
        except (resolution.ResolveRefused, incidents.IncidentNotFound) as err:
            print(err, file=sys.stderr)
            return 1
        linked = f"; noted on incident(s) {list(done.incidents)}" if done.incidents else ""
        if done.inbox_id is None:
            print(f"{done.payment_id}: {args.outcome} recorded{linked}")
            return 0
        if done.again:
            print(f"{done.payment_id}: already settled by hand as {args.outcome} "
                  f"(inbox event {done.inbox_id}); nothing new recorded")
        else:
            print(f"{done.payment_id}: settlement stored as inbox event "
                  f"{done.inbox_id}{linked}")
        return await _wait_applied(conn, done.inbox_id, args.wait_s)
    finally:
        await conn.close()


async def _wait_applied(conn: asyncpg.Connection, inbox_id: int, wait_s: int) -> int:
    """The running bridge's workers apply the event; report what became of it."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        status, note = await resolution.event_status(conn, inbox_id)
        if status != "pending":
            print(f"inbox event {inbox_id}: {status}" + (f" ({note})" if note else ""))
            return 0 if status == "applied" else 1
        if asyncio.get_running_loop().time() >= deadline:
            print(f"inbox event {inbox_id} is still pending: is the bridge running? It will "
                  "be applied when it is.")
            return 0 if wait_s == 0 else 1
        await asyncio.sleep(APPLY_POLL_S)
