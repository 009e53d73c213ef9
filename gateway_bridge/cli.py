"""`gateway-bridge` command line: the process and its operations: serve, migrate,
simulate-psp, demo, reconcile.

The support commands moved to `walletctl` (gateway_bridge/support/cli.py). Their old
spellings here (dead-letters, payment, find-payment, sync-payment, risk) still work for one
release: each says on stderr which `walletctl` command to use instead, then runs walletctl's
implementation, with this command's exit codes.
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

import asyncpg
import uvloop

from gateway_bridge import config
from gateway_bridge.demo import run_demo
from gateway_bridge.reconciliation import layouts, output, service
from gateway_bridge.reconciliation.layouts import ReportError
from gateway_bridge.reconciliation.matcher import Period
from gateway_bridge.reconciliation.store import PeriodTooLong
from gateway_bridge.server import migrate_database, serve
from gateway_bridge.support import dead_letter_commands, payment_commands, risk_commands
from gateway_bridge.support.console import connect
from service_kit import logs
from service_kit.migrations import MigrationError
from service_kit.pg import database_url_from_env
from service_kit.settings import SettingsError

# The support commands' old spellings, kept for one release, and what replaced each.
MOVED_TO_WALLETCTL = {
    "dead-letters": "walletctl dead-letters",
    "payment": "walletctl payment show",
    "find-payment": "walletctl payment find",
    "sync-payment": "walletctl payment sync",
    "risk": "walletctl risk",
}


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
    except ModuleNotFoundError as err:
        if err.name != "psp_simulator":
            raise  # the simulator is there but broken: that is a bug to see, not "absent"
        print("simulate-psp: the PSP simulator (package psp_simulator) is not installed here; "
              "it ships with a source checkout (make run) and the image's dev target "
              "(deploy/Dockerfile), not with production builds", file=sys.stderr)
        return 2
    settings = sim_config.load(os.environ)
    logs.configure(os.environ.get("SIM_LOG_LEVEL", "INFO"))
    await run(settings)
    return 0


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
    demo = sub.add_parser("demo", help="a cashier session through the bridge and simulator")
    demo.add_argument("--bridge-url", default="http://127.0.0.1:8080")
    demo.add_argument("--sim-url", default="http://127.0.0.1:8090")
    demo.add_argument("--wallet-addr", default="127.0.0.1:50051")
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
    _add_moved(sub)
    return parser


def _add_moved(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The support commands' old spellings, with walletctl's arguments (which are theirs)."""
    def moved(name: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=f"deprecated: use {MOVED_TO_WALLETCTL[name]}")
    dead_letter_commands.add_arguments(moved("dead-letters"))
    moved("payment").add_argument("payment_id")
    moved("find-payment").add_argument("reference")
    payment_commands.add_sync_arguments(moved("sync-payment"))
    risk_commands.add_arguments(moved("risk"))


def _work(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    if args.command == "serve":
        return _serve()
    if args.command == "migrate":
        return _migrate()
    if args.command == "simulate-psp":
        return _simulate()
    if args.command == "demo":
        return _demo(args)
    if args.command == "reconcile":
        return _reconcile(args)
    return _moved_work(args)


def _moved_work(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """An old support spelling: one line on stderr naming its walletctl command, then the
    same implementation walletctl runs."""
    print(f"gateway-bridge {args.command} is deprecated and goes in the next release: use "
          f"{MOVED_TO_WALLETCTL[args.command]} (same arguments)", file=sys.stderr)
    if args.command == "dead-letters":
        return dead_letter_commands.dead_letters(args)
    if args.command == "risk":
        return risk_commands.risk(args, risk_commands.support_key())
    if args.command == "find-payment":
        return payment_commands.find_payment(args)
    if args.command == "sync-payment":
        return payment_commands.sync_payment(args, config.load())
    return payment_commands.show_payment(args)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        sys.exit(uvloop.run(_work(args)))
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
