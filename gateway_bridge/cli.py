"""`gateway-bridge` command line: serve, migrate, simulate-psp, dead-letters, payment,
find-payment, sync-payment, reconcile, risk.

Support commands talk to the database directly, so they work while the bridge is down; a
replayed event is picked up by the running bridge's inbox workers on their next poll. `risk`
is the exception: approving a held payment sends it on to the PSP and the wallet, which only
the running bridge does, so it goes through the bridge's support API.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import uvloop

from gateway_bridge import config
from gateway_bridge.demo import run_demo
from gateway_bridge.http.cashier import payment_view
from gateway_bridge.payments import store
from gateway_bridge.payments.status_sync import poll_ref
from gateway_bridge.psp.base import PspError
from gateway_bridge.psp.registry import build_adapters
from gateway_bridge.reconciliation import layouts, output, service
from gateway_bridge.reconciliation.layouts import ReportError
from gateway_bridge.reconciliation.matcher import Period
from gateway_bridge.reconciliation.store import PeriodTooLong
from gateway_bridge.server import migrate_database, serve
from service_kit import logs
from service_kit.migrations import MigrationError
from service_kit.pg import database_url_from_env, init_json_codecs
from service_kit.settings import SettingsError


def print_json(value: Any) -> None:
    def default(obj: object) -> str:
        if isinstance(obj, datetime):
            return obj.isoformat()
        raise TypeError
    print(orjson.dumps(value, default=default, option=orjson.OPT_INDENT_2).decode())


async def connect() -> asyncpg.Connection:
    conn = await asyncpg.connect(database_url_from_env(), timeout=5.0)
    await init_json_codecs(conn)
    return conn


async def _migrate() -> int:
    applied = await migrate_database(database_url_from_env())
    print(f"applied migrations: {applied}" if applied else "schema is up to date")
    return 0


async def _serve() -> int:
    settings = config.load()
    logs.configure(settings.log_level)
    await serve(settings)
    return 0


async def _simulate() -> int:
    # A development package beside the bridge, not part of the production image or wheel.
    try:
        from psp_simulator import config as sim_config
        from psp_simulator.app import run
    except ImportError:
        print("simulate-psp: the PSP simulator (package psp_simulator) is not installed here; "
              "it ships with a source checkout (make run) and the image's dev target "
              "(deploy/Dockerfile), not with production builds", file=sys.stderr)
        return 2
    settings = sim_config.load(os.environ)
    logs.configure(os.environ.get("SIM_LOG_LEVEL", "INFO"))
    await run(settings)
    return 0


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


async def show_payment(args: argparse.Namespace) -> int:
    conn = await connect()
    try:
        p = await store.payment(conn, args.payment_id)
        if p is None:
            print(f"no payment {args.payment_id}", file=sys.stderr)
            return 1
        print_json(payment_view(p, await store.history(conn, p.id)))
        return 0
    finally:
        await conn.close()


# A support call to the running bridge answers within this (approve calls the PSP).
RISK_CALL_TIMEOUT_S = 60.0


def _support_key() -> str:
    """The support client's API key: BRIDGE_SUPPORT_API_KEY, or the file its _FILE names."""
    key_file = os.environ.get("BRIDGE_SUPPORT_API_KEY_FILE", "")
    if key_file:
        return Path(key_file).read_text().strip()
    return os.environ.get("BRIDGE_SUPPORT_API_KEY", "")


async def _risk(args: argparse.Namespace, key: str) -> int:
    """List, approve or reject payments held for review, through the bridge's support API
    (BRIDGE_URL, default the local bridge)."""
    if not key:
        print("BRIDGE_SUPPORT_API_KEY (or BRIDGE_SUPPORT_API_KEY_FILE): required",
              file=sys.stderr)
        return 2
    base = os.environ.get("BRIDGE_URL", "http://127.0.0.1:8080").rstrip("/")
    headers = {"Authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=RISK_CALL_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
        if args.action == "pending":
            request = http.get(f"{base}/v1/risk/reviews")
        else:
            if not args.payment_id or not args.reason:
                print(f"risk {args.action}: PAYMENT_ID and --reason are required",
                      file=sys.stderr)
                return 2
            request = http.post(f"{base}/v1/risk/reviews/{args.payment_id}/{args.action}",
                                json={"actor": args.actor, "reason": args.reason})
        async with request as resp:
            body = await resp.read()
    answer = orjson.loads(body) if body else {}
    print_json(answer)
    return 0 if resp.status < 400 else 1


FIND_ROWS_MAX = 20


async def find_payment(args: argparse.Namespace) -> int:
    """Payments matching any reference support has: ours, the PSP's, the withdrawal id, the
    cashier's Idempotency-Key."""
    conn = await connect()
    try:
        found = await store.payments_by_any_reference(conn, args.reference, FIND_ROWS_MAX)
        print_json([payment_view(p, await store.history(conn, p.id)) for p in found])
        return 0 if found else 1
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
        async with conn.transaction():
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


def _utc_time(value: str) -> datetime:
    """--from/--to: ISO 8601; a time without an offset is UTC."""
    at = datetime.fromisoformat(value)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _read_report(path: Path) -> bytes:
    """At most one byte past the size limit: enough for the parser to refuse the file."""
    with path.open("rb") as f:
        return f.read(layouts.REPORT_BYTES_MAX + 1)


async def _reconcile(args: argparse.Namespace) -> int:
    """Exit 0: everything matched; 1: differences found; 2: bad input; 3: database down."""
    try:
        data = await asyncio.to_thread(_read_report, args.file)
        given = [args.period_from, args.period_to]
        if any(given) and not all(given):
            raise ReportError("give both --from and --to, or neither")
        period = Period(args.period_from, args.period_to) if all(given) else None
    except OSError as err:
        print(f"{args.file}: unreadable: {err.strerror or err}", file=sys.stderr)
        return 2
    except ValueError as err:  # ReportError, or a period that ends before it starts
        print(f"{args.file}: {err}", file=sys.stderr)
        return 2
    try:
        conn = await connect()
    except (OSError, asyncpg.PostgresError) as err:
        print(f"database unavailable: {type(err).__name__}: {err}", file=sys.stderr)
        return 3
    try:
        outcome = await service.reconcile(conn, psp=args.psp, data=data, period=period)
    except (ReportError, PeriodTooLong) as err:
        print(f"{args.file}: {err}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError) as err:
        print(f"database unavailable: {type(err).__name__}: {err}", file=sys.stderr)
        return 3
    finally:
        await conn.close()
    csv_path, summary_path = service.write_outputs(outcome, args.out)
    print(output.summary_text(outcome.summary))
    print(f"findings: {csv_path}\nsummary:  {summary_path}")
    return 1 if outcome.differences else 0


async def _demo(args: argparse.Namespace) -> int:
    return await run_demo(bridge_url=args.bridge_url, sim_url=args.sim_url,
                          wallet_addr=args.wallet_addr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway-bridge")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the bridge (HTTP, inbox workers, status sync)")
    sub.add_parser("migrate", help="apply the bridge schema's migrations")
    sub.add_parser("simulate-psp", help="run the PSP simulator (Stripe, Adyen, NOWPayments)")
    dead = sub.add_parser("dead-letters", help="list or replay dead-lettered PSP events")
    dead.add_argument("action", choices=["list", "replay"])
    dead.add_argument("--id", type=int, help="replay this event")
    dead.add_argument("--all", action="store_true", help="replay every dead event")
    dead.add_argument("--after", type=int, default=0, help="list events after this id")
    dead.add_argument("--limit", type=int, default=100, choices=range(1, 1001),
                      metavar="1..1000")
    dead.add_argument("--json", action="store_true")
    demo = sub.add_parser("demo", help="a cashier session through the bridge and simulator")
    demo.add_argument("--bridge-url", default="http://127.0.0.1:8080")
    demo.add_argument("--sim-url", default="http://127.0.0.1:8090")
    demo.add_argument("--wallet-addr", default="127.0.0.1:50051")
    show = sub.add_parser("payment", help="show a payment with its history")
    show.add_argument("payment_id")
    recon = sub.add_parser("reconcile", help="match a PSP settlement report against our "
                           "payments and the wallet journal (docs/RECONCILIATION.md)")
    recon.add_argument("--psp", required=True, choices=["stripe", "adyen"])
    recon.add_argument("file", type=Path, help="the report CSV in the PSP's layout")
    recon.add_argument("--out", type=Path, default=Path("."),
                       help="directory for the findings CSV and summary JSON")
    recon.add_argument("--from", dest="period_from", type=_utc_time, default=None,
                       help="period start (ISO 8601, UTC if no offset); default: the "
                       "report's first day")
    recon.add_argument("--to", dest="period_to", type=_utc_time, default=None,
                       help="period end, exclusive; default: the day after the last line")
    find = sub.add_parser("find-payment", help="payments by any reference: ours, the PSP's, "
                          "the withdrawal id, the cashier's Idempotency-Key")
    find.add_argument("reference")
    sync = sub.add_parser("sync-payment", help="ask the PSP about a payment now (timed out "
                          "ones too); the answer goes through the inbox")
    sync.add_argument("payment_id")
    sync.add_argument("--reason", required=True, help="why (kept in the payment's history)")
    sync.add_argument("--actor", default=os.environ.get("USER", "support"))
    risk = sub.add_parser("risk", help="payments held by the risk rules: list, approve, "
                          "reject (through the running bridge; docs/RISK.md)")
    risk.add_argument("action", choices=["pending", "approve", "reject"])
    risk.add_argument("payment_id", nargs="?", default="")
    risk.add_argument("--reason", default="", help="why (kept in the audit log)")
    risk.add_argument("--actor", default=os.environ.get("USER", "support"),
                      help="who decides (kept in the audit log)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    work: Coroutine[Any, Any, int]
    if args.command == "serve":
        work = _serve()
    elif args.command == "migrate":
        work = _migrate()
    elif args.command == "simulate-psp":
        work = _simulate()
    elif args.command == "demo":
        work = _demo(args)
    elif args.command == "dead-letters":
        work = dead_letters(args)
    elif args.command == "reconcile":
        work = _reconcile(args)
    elif args.command == "risk":
        work = _risk(args, _support_key())
    elif args.command == "find-payment":
        work = find_payment(args)
    elif args.command == "sync-payment":
        work = sync_payment(args, config.load())
    else:
        work = show_payment(args)
    try:
        sys.exit(uvloop.run(work))
    except SettingsError as err:
        print(err, file=sys.stderr)
        sys.exit(2)
    except MigrationError as err:
        print(f"migration failed: {err}", file=sys.stderr)
        sys.exit(1)
    except (OSError, asyncpg.PostgresError) as err:
        print(f"database unavailable: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
