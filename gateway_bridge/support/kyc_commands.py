"""`walletctl kyc show | allow-cash-out`: a player's identity verification, and support's
reviewed decision to let a rejected player's own cash leave (docs/COMPLIANCE.md). Both work
on the bridge's database, so they work while the bridge is down; the decision is kept in the
player's KYC history with who made it and why."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from gateway_bridge.kyc.model import KycRefused
from gateway_bridge.kyc.service import allow_cash_out, support_view
from gateway_bridge.support.console import connect, print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["show", "allow-cash-out"])
    parser.add_argument("player_id")
    parser.add_argument("--reason", default="", help="allow-cash-out: what the review found")


def check(args: argparse.Namespace) -> str | None:
    if args.action == "allow-cash-out" and not args.reason.strip():
        return "kyc allow-cash-out: give --reason TEXT (it is kept in the history)"
    return None


async def run(args: argparse.Namespace) -> int:
    conn = await connect()
    try:
        now = datetime.now(UTC)
        if args.action == "allow-cash-out":
            try:
                await allow_cash_out(conn, args.player_id, actor=args.actor,
                                     reason=args.reason, now=now)
            except KycRefused as err:
                print(f"{err.code}: {err.message}", file=sys.stderr)
                return 1
        print_json(await support_view(conn, args.player_id, now.date()))
        return 0
    finally:
        await conn.close()
