"""`gateway-bridge` command line: serve, migrate, simulate-psp, dead-letters, payment.

Support commands talk to the database directly, so they work while the bridge is down; a
replayed event is picked up by the running bridge's inbox workers on their next poll.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import uvloop

from gateway_bridge import config
from gateway_bridge.demo import run_demo
from gateway_bridge.http.cashier import payment_view
from gateway_bridge.server import migrate_database, serve
from gateway_bridge.storage import repo
from service_kit import logs
from service_kit.migrations import MigrationError
from service_kit.pg import database_url_from_env, init_json_codecs
from service_kit.settings import SettingsError


def _print_json(value: Any) -> None:
    def default(obj: object) -> str:
        if isinstance(obj, datetime):
            return obj.isoformat()
        raise TypeError
    print(orjson.dumps(value, default=default, option=orjson.OPT_INDENT_2).decode())


async def _connect() -> asyncpg.Connection:
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
    from gateway_bridge.simulator import config as sim_config
    from gateway_bridge.simulator.app import run
    settings = sim_config.load(os.environ)
    logs.configure(os.environ.get("SIM_LOG_LEVEL", "INFO"))
    await run(settings)
    return 0


async def _dead_letters(args: argparse.Namespace) -> int:
    conn = await _connect()
    try:
        if args.action == "list":
            rows = await repo.dead_events(conn, after_id=args.after, limit=args.limit)
            if args.json:
                _print_json(rows)
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
        ids = await repo.replay_dead(conn, None if args.all else args.id)
        print(f"replayed {len(ids)} event(s): {ids}")
        return 0 if ids or args.all else 1
    finally:
        await conn.close()


async def _payment(args: argparse.Namespace) -> int:
    conn = await _connect()
    try:
        p = await repo.payment(conn, args.payment_id)
        if p is None:
            print(f"no payment {args.payment_id}", file=sys.stderr)
            return 1
        _print_json(payment_view(p, await repo.history(conn, p.id)))
        return 0
    finally:
        await conn.close()


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
        work = _dead_letters(args)
    else:
        work = _payment(args)
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
