"""`walletctl`: the support engineer's command line (docs/INCIDENTS.md).

    walletctl player ID                       balances, journal and payments of a player
    walletctl payment find REF | show ID      a payment by any reference, with its history
    walletctl payment sync ID --reason        ask the PSP now; the answer goes to the inbox
    walletctl payment resolve ID --outcome succeeded|failed|dismiss --reason
    walletctl dead-letters list | replay      events that could not be applied
    walletctl refunds list | retry | done     refunds of captures at PSPs a payment left
    walletctl kyc show | allow-cash-out ID    a player's identity verification
    walletctl aml list | show | investigate | clear | report   money-laundering cases
    walletctl risk pending | approve | reject payments held by the risk rules
    walletctl incidents list | show | ack | advance | note | resolve | evaluate | report

Everything is recorded with who did it (--actor, default $USER) and why. It talks to the
bridge's database directly, so it works while the bridge is down; money moves only through
the inbox (applied by the running bridge) or the wallet's own API. `risk` is the exception:
approving sends the payment on, which only the running bridge does, so it goes through the
bridge's support API. Exit codes: 0 done, 1 not found or refused, 2 bad input, 3 database,
wallet or bridge unreachable, or DATABASE_URL naming a database or role that does not exist.

Here: the parser, the exit codes, `player` and `incidents`. The payment, dead-letter and
risk commands live in modules of their own, which `gateway-bridge`'s deprecated spellings of
them run too.
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
from gateway_bridge.incidents import store as incidents
from gateway_bridge.incidents.detector import Detector
from gateway_bridge.incidents.rules import LifecycleError, Stage
from gateway_bridge.psp.registry import build_adapters
from gateway_bridge.support import (
    aml_commands,
    console,
    dead_letter_commands,
    kyc_commands,
    payment_commands,
    player,
    refund_commands,
    report,
    resolution,
    risk_commands,
)
from gateway_bridge.support.console import actor_default, connect, print_json
from gateway_bridge.wallet.client import WalletClient, WalletRefused, WalletUnavailable
from service_kit.pg import init_json_codecs
from service_kit.settings import EnvReader, SettingsError, read_secret

LIST_ROWS_MAX = 200


# Incident ids are bigint identities: anything else is refused before the database sees it.
ID_MAX = 2**63 - 1


def _incident_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an incident id: {text!r}") from None
    if not 1 <= value <= ID_MAX:
        raise argparse.ArgumentTypeError(f"not an incident id: {text}")
    return value


async def _player(args: argparse.Namespace) -> int:
    r = EnvReader(os.environ)
    # a wallet token with the read or support scope
    token = read_secret(os.environ, r, "WALLETCTL_WALLET_TOKEN", required=True)
    addr = r.text("WALLETCTL_WALLET_ADDR", os.environ.get("BRIDGE_WALLET_ADDR",
                                                         "127.0.0.1:50051"))
    timeout_ms = r.integer("WALLETCTL_WALLET_TIMEOUT_MS", 5000, low=100, high=60_000)
    r.done()
    wallet = WalletClient(addr=addr, token=token, timeout_ms=timeout_ms,
                          tls_ca_file=os.environ.get("WALLETCTL_WALLET_TLS_CA_FILE", ""))
    conn = await connect()
    try:
        view = await player.player_view(conn, wallet, args.player_id,
                                        currencies=[c.upper() for c in args.currency],
                                        limit=args.limit)
    except WalletRefused as err:
        print(f"the wallet refused: {err.code} {err.reason}: {err.message}", file=sys.stderr)
        return 1
    except WalletUnavailable as err:
        print(f"wallet unavailable: {err}", file=sys.stderr)
        return 3
    finally:
        await conn.close()
        await wallet.close()
    print_json(view)
    return 0 if view["wallets"] or view["payments"] else 1


def _print_incident_line(i: dict[str, Any]) -> None:
    risk = ", ".join(report.money(v, c) for c, v in i["at_risk"].items()) or "-"
    clear = " (clear)" if i["cleared_at"] and i["stage"] != "resolved" else ""
    print(f"{i['id']:>6}  {i['stage']:<10}{clear:<8} {i['rule']:<20} {i['scope']:<22} "
          f"payments={i['payments']:<5} players={i['players']:<5} at risk: {risk}")
    print(f"        {i['summary']}")


async def _incidents(args: argparse.Namespace) -> int:
    action = args.action
    if action == "evaluate":
        return await _evaluate()
    conn = await connect()
    try:
        if action == "list":
            rows = await incidents.list_incidents(
                conn, stage=Stage(args.stage) if args.stage else None,
                include_resolved=args.all, limit=args.limit)
            if args.json:
                print_json(rows)
            else:
                for row in rows:
                    _print_incident_line(row)
                print(f"{len(rows)} incident(s)")
            return 0
        if args.id is None:
            print(f"incidents {action}: give the incident id", file=sys.stderr)
            return 2
        if action == "show":
            print_json(await incidents.incident(conn, args.id))
            return 0
        if action == "report":
            return await _report(conn, args.id, args.out)
        async with conn.transaction(isolation="read_committed"):
            await _change(conn, args)
        print(f"incident {args.id}: {action} recorded")
        return 0
    except incidents.IncidentNotFound as err:
        print(err, file=sys.stderr)
        return 1
    except LifecycleError as err:
        print(f"incident {args.id}: {err}", file=sys.stderr)
        return 1
    finally:
        await conn.close()


async def _change(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    if args.action == "ack":
        await incidents.move(conn, args.id, Stage.DIAGNOSING, actor=args.actor,
                             note=args.note or "acknowledged")
    elif args.action == "advance":
        await incidents.move(conn, args.id, Stage(args.to), actor=args.actor,
                             note=args.note or "")
    elif args.action == "note":
        await incidents.note(conn, args.id, actor=args.actor, text=args.note,
                             kind="action" if args.action_taken else "note")
    else:
        await incidents.resolve(conn, args.id, actor=args.actor, cause=args.cause,
                                resolution=args.resolution, force=args.force)


async def _evaluate() -> int:
    """One evaluation now, as the running bridge does on its schedule (cron, a check after
    a change). Circuit breakers live in the bridge's process: here they read closed."""
    settings = config.load()
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1,
                                     init=init_json_codecs, timeout=5.0)
    adapters = build_adapters(settings.psps)
    try:
        detector = Detector(pool=pool, policy=settings.incidents, adapters=adapters,
                            probe_interval_ms=settings.probe_interval_ms,
                            timeout_ms=settings.db_statement_timeout_ms)
        changes = await detector.evaluate_once()
    finally:
        for a in adapters.values():
            await a.close()
        await pool.close()
    if changes is None:
        print("another bridge is evaluating right now; nothing done")
        return 0
    for c in changes:
        print(f"incident {c.incident_id} {c.what}: {c.rule} at {c.scope}")
    print(f"{len(changes)} change(s)")
    return 0


async def _report(conn: asyncpg.Connection, incident_id: int, out: Path) -> int:
    now = datetime.now(UTC)
    view = await incidents.incident(conn, incident_id)
    period = report.chart_period(view, now)
    activity = await incidents.activity(conn, psp=view["psp"], start=period.start,
                                        end=period.end, bucket_s=period.bucket_s)
    try:
        markdown, chart = await asyncio.to_thread(report.write, view, activity, out,
                                                  generated_at=now)
    except OSError as err:
        print(f"cannot write the report to {out}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(f"report: {markdown}\nchart:  {chart}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="walletctl", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def actor(p: argparse.ArgumentParser) -> None:
        p.add_argument("--actor", default=actor_default(), help="who (kept in the record)")

    who = sub.add_parser("player", help="a player's balances, journal and payments")
    who.add_argument("player_id")
    who.add_argument("--currency", action="append", default=[],
                     help="only this wallet (repeatable); default: every currency")
    who.add_argument("--limit", type=int, default=20, choices=range(1, 501),
                     metavar="1..500", help="journal entries per wallet and payments")

    pay = sub.add_parser("payment", help="find, show, sync or settle a payment")
    pay_sub = pay.add_subparsers(dest="payment_action", required=True)
    find = pay_sub.add_parser("find", help="by our id, the PSP's reference, the withdrawal "
                              "id or the cashier's Idempotency-Key")
    find.add_argument("reference")
    show = pay_sub.add_parser("show", help="one payment with its history")
    show.add_argument("payment_id")
    sync = pay_sub.add_parser("sync", help="ask the PSP now (timed-out payments too); the "
                              "answer goes through the inbox")
    payment_commands.add_sync_arguments(sync)
    settle = pay_sub.add_parser("resolve", help="settle a stuck payment by hand, or clear "
                                "its attention (dismiss)")
    settle.add_argument("payment_id")
    settle.add_argument("--outcome", required=True, choices=[o.value for o in
                                                             resolution.Outcome])
    settle.add_argument("--reason", required=True, help="what support found out")
    settle.add_argument("--incident", type=_incident_id, default=None,
                        help="also note it on this incident's timeline")
    wait_s_max = payment_commands.APPLY_WAIT_S_MAX
    settle.add_argument("--wait-s", type=int, default=15, choices=range(0, wait_s_max + 1),
                        metavar=f"0..{wait_s_max}",
                        help="wait this long for the running bridge to apply it")
    actor(settle)

    dead = sub.add_parser("dead-letters", help="list or replay dead-lettered PSP events")
    dead_letter_commands.add_arguments(dead)

    owed = sub.add_parser("refunds", help="refunds of captures at PSPs a payment left: list, "
                          "retry a failed one, or record one made by hand")
    refund_commands.add_arguments(owed)
    actor(owed)

    kyc = sub.add_parser("kyc", help="a player's identity verification; let a rejected "
                         "player's own cash leave after review")
    kyc_commands.add_arguments(kyc)
    actor(kyc)

    aml = sub.add_parser("aml", help="anti-money-laundering cases: list, show, investigate, "
                         "clear, report (writes the suspicious-activity record)")
    aml_commands.add_arguments(aml)
    actor(aml)

    risk = sub.add_parser("risk", help="payments held by the risk rules: list, approve, "
                          "reject (through the running bridge; docs/RISK.md)")
    risk_commands.add_arguments(risk)

    inc = sub.add_parser("incidents", help="list, show, acknowledge, advance, note, resolve, "
                         "evaluate, report")
    inc.add_argument("action", choices=["list", "show", "ack", "advance", "note", "resolve",
                                        "evaluate", "report"])
    inc.add_argument("id", type=_incident_id, nargs="?", default=None)
    inc.add_argument("--stage", choices=[s.value for s in Stage], help="list: only this stage")
    inc.add_argument("--all", action="store_true", help="list: resolved ones too")
    inc.add_argument("--limit", type=int, default=50, choices=range(1, LIST_ROWS_MAX + 1),
                     metavar=f"1..{LIST_ROWS_MAX}")
    inc.add_argument("--json", action="store_true")
    inc.add_argument("--to", choices=[Stage.CORRECTING.value, Stage.VALIDATING.value],
                     help="advance: the next stage")
    inc.add_argument("--note", default="", help="ack/advance: why; note: the text")
    inc.add_argument("--action-taken", action="store_true",
                     help="note: record it as a correction step (listed under Correction)")
    inc.add_argument("--cause", default="", help="resolve: what caused it")
    inc.add_argument("--resolution", default="", help="resolve: what put it right")
    inc.add_argument("--force", action="store_true",
                     help="resolve before validation passed (say why in --resolution)")
    inc.add_argument("--out", type=Path, default=Path("."), help="report: output directory")
    actor(inc)
    return parser


def _check(args: argparse.Namespace) -> str | None:
    """Arguments argparse can't check alone; a message when something is missing."""
    if args.command == "refunds":
        return refund_commands.check(args)
    if args.command == "kyc":
        return kyc_commands.check(args)
    if args.command == "aml":
        return aml_commands.check(args)
    if args.command != "incidents":
        return None
    if args.action == "advance" and not args.to:
        return "incidents advance: give --to correcting|validating"
    if args.action == "note" and not args.note.strip():
        return "incidents note: give --note TEXT"
    if args.action == "resolve" and not (args.cause.strip() and args.resolution.strip()):
        return "incidents resolve: give --cause and --resolution (they go in the report)"
    return None


def _work(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    if args.command == "player":
        return _player(args)
    if args.command == "dead-letters":
        return dead_letter_commands.dead_letters(args)
    if args.command == "refunds":
        return refund_commands.run(args)
    if args.command == "kyc":
        return kyc_commands.run(args)
    if args.command == "aml":
        return aml_commands.run(args)
    if args.command == "risk":
        return risk_commands.risk(args, risk_commands.support_key())
    if args.command == "incidents":
        return _incidents(args)
    action = args.payment_action
    if action == "find":
        return payment_commands.find_payment(args)
    if action == "show":
        return payment_commands.show_payment(args)
    if action == "sync":
        return payment_commands.sync_payment(args, config.load())
    return payment_commands.resolve_payment(args)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    problem = _check(args)
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(uvloop.run(_work(args)))
    except SettingsError as err:
        print(err, file=sys.stderr)
        sys.exit(2)
    except (OSError, asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError,
            asyncpg.CannotConnectNowError) as err:
        print(f"database unavailable: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(3)
    except console.DATABASE_URL_WRONG as err:
        # Not worth retrying: the URL names a database or role the server does not have.
        print(console.wrong_database_url(err, os.environ.get("DATABASE_URL", "")),
              file=sys.stderr)
        sys.exit(3)
    except asyncpg.DataError as err:
        print(f"bad input: {err}", file=sys.stderr)
        sys.exit(2)
    except asyncpg.PostgresError as err:  # a lock conflict, a constraint: nothing was changed
        print(f"the database refused ({type(err).__name__}): {err}; nothing was changed, "
              "try again", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
