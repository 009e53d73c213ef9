"""`walletctl risk pending | approve | reject`: payments held by the risk rules (docs/RISK.md).

The one support command that goes through the running bridge rather than the database:
approving a held payment sends it on to the PSP and the wallet, which only the bridge does.
It calls the bridge's support API (BRIDGE_URL, default the local bridge) with the support
client's API key. `gateway-bridge risk` (deprecated) runs the same code.
"""

from __future__ import annotations

import argparse
import os
import sys

import aiohttp
import orjson

from gateway_bridge.support.console import actor_default, print_json
from service_kit.settings import EnvReader, read_secret

# A support call to the running bridge answers within this (approve calls the PSP).
RISK_CALL_TIMEOUT_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["pending", "approve", "reject"])
    parser.add_argument("payment_id", nargs="?", default="")
    parser.add_argument("--reason", default="", help="why (kept in the audit log)")
    parser.add_argument("--actor", default=actor_default(),
                        help="who decides (kept in the audit log)")


def support_key() -> str:
    """The support client's API key: BRIDGE_SUPPORT_API_KEY, or the file its _FILE names.
    An unreadable file is a SettingsError (exit 2); a missing key is `risk`'s to report."""
    r = EnvReader(os.environ)
    key = read_secret(os.environ, r, "BRIDGE_SUPPORT_API_KEY", required=False)
    r.done()
    return key


async def risk(args: argparse.Namespace, key: str) -> int:
    """List, approve or reject payments held for review, through the bridge's support API."""
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
        try:
            async with request as resp:
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as err:
            # Exit 3 like an unreachable database: the service is away, retrying may help.
            print(f"the bridge is unreachable at {base}: {type(err).__name__}",
                  file=sys.stderr)
            return 3
    answer = orjson.loads(body) if body else {}
    print_json(answer)
    return 0 if resp.status < 400 else 1
