"""A scripted cashier session through the running bridge and PSP simulator: two deposits
(card via Stripe, crypto via NOWPayments) and two withdrawals (one paid via Adyen, one that
Stripe fails), each completed at the simulator, with the wallet balance after each step.

Reads the cashier API key from BRIDGE_API_KEYS_FILE and the bridge's wallet token from
BRIDGE_WALLET_TOKEN_FILE, as written by `make run`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway_bridge.shared.money import format_major
from gateway_bridge.wallet.client import WalletClient

# How long the demo waits for a webhook to be applied before it calls the step failed.
SETTLE_TIMEOUT_S = 15.0


class DemoFailed(Exception):
    pass


class _Session:
    def __init__(self, http: aiohttp.ClientSession, *, bridge_url: str, sim_url: str,
                 api_key: str) -> None:
        self.http = http
        self.bridge_url = bridge_url
        self.sim_url = sim_url
        self.auth = {"Authorization": f"Bearer {api_key}"}

    async def post(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        async with self.http.post(self.bridge_url + path, json=body,
                                  headers={**self.auth, "Idempotency-Key": key}) as r:
            data: dict[str, Any] = await r.json(loads=orjson.loads)
            if r.status >= 400:
                raise DemoFailed(f"POST {path}: {r.status} {data}")
            return data

    async def payment(self, payment_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.bridge_url}/v1/payments/{payment_id}",
                                 headers=self.auth) as r:
            data: dict[str, Any] = await r.json(loads=orjson.loads)
            return data

    async def simulate(self, path: str, body: dict[str, Any]) -> None:
        async with self.http.post(self.sim_url + path, json=body) as r:
            if r.status >= 400:
                raise DemoFailed(f"simulator {path}: {r.status} {await r.text()}")

    async def settle(self, payment_id: str, state: str) -> dict[str, Any]:
        async with asyncio.timeout(SETTLE_TIMEOUT_S):
            while True:
                p = await self.payment(payment_id)
                if p["state"] == state:
                    return p
                await asyncio.sleep(0.1)


def _wallet_token() -> str:
    path = os.environ.get("BRIDGE_WALLET_TOKEN_FILE", "")
    if not path:
        raise SystemExit("demo: set BRIDGE_WALLET_TOKEN_FILE (written by `make run`)")
    return Path(path).read_text().strip()


def _api_key() -> str:
    path = os.environ.get("BRIDGE_API_KEYS_FILE", "")
    if not path:
        raise SystemExit("demo: set BRIDGE_API_KEYS_FILE (written by `make run`)")
    keys: dict[str, str] = orjson.loads(Path(path).read_bytes())
    return next(iter(keys.values()))


async def _fx_deposit(s: _Session, player: str,
                      show: Callable[[str, dict[str, Any]], Awaitable[None]]) -> None:
    """Paid in BTC, credited in USD at the rates provider's rate minus the spread
    (docs/FX.md): the rate, its source and time end up on the wallet transaction."""
    fx = await s.post("/v1/deposits", {
        "player_id": player, "amount_minor": 50_000, "currency": "BTC",
        "wallet_currency": "USD", "psp": "nowpayments", "method": "crypto",
        "pay_currency": "btc"}, f"{player}-dep-fx")
    quote = fx["fx"]["quote"]
    print(f"  deposit 0.00050000 BTC into the USD wallet: rate {quote['rate']} "
          f"({quote['source']}), spread {quote['spread_bps']} bps, about "
          f"{format_major(int(quote['estimated_credit_minor']), 'USD')} USD")
    await s.simulate(f"/_sim/deposits/nowpayments/{fx['psp_reference']}/complete",
                     {"outcome": "succeeded"})
    await show("BTC deposit converted and credited", await s.settle(fx["id"], "succeeded"))


async def run_demo(*, bridge_url: str, sim_url: str, wallet_addr: str) -> int:
    wallet = WalletClient(addr=wallet_addr, token=_wallet_token(), timeout_ms=3000)
    api_key = _api_key()
    player = f"demo-{uuid.uuid4().hex[:8]}"
    print(f"\nCashier demo for player {player} via {bridge_url} and the PSP simulator "
          f"at {sim_url} (USD):")

    async def show(step: str, p: dict[str, Any]) -> None:
        b = await wallet.balances(player_id=player, currency="USD")
        print(f"  {step:<44} {p['state']:<15} cash {format_major(b.cash, 'USD'):>8}  "
              f"reserved {format_major(b.reserved, 'USD'):>7}")

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            s = _Session(http, bridge_url=bridge_url.rstrip("/"), sim_url=sim_url.rstrip("/"),
                         api_key=api_key)
            card = await s.post("/v1/deposits", {
                "player_id": player, "amount_minor": 50_00, "currency": "USD", "psp": "stripe",
                "method": "card"}, f"{player}-dep-1")
            print(f"  deposit 50.00 by card: checkout {card['instructions']['checkout_url']}")
            await s.simulate(f"/_sim/deposits/stripe/{card['psp_reference']}/complete",
                             {"outcome": "succeeded"})
            await show("card deposit paid (Stripe webhook)", await s.settle(card["id"],
                                                                            "succeeded"))
            crypto = await s.post("/v1/deposits", {
                "player_id": player, "amount_minor": 20_00, "currency": "USD",
                "psp": "nowpayments", "method": "crypto", "pay_currency": "btc"},
                f"{player}-dep-2")
            i = crypto["instructions"]
            print(f"  deposit 20.00 in crypto: send {i['pay_amount']} {i['pay_currency']} "
                  f"to {i['pay_address']}")
            await s.simulate(f"/_sim/deposits/nowpayments/{crypto['psp_reference']}/complete",
                             {"outcome": "succeeded"})
            await show("crypto deposit confirmed (NOWPayments IPN)",
                       await s.settle(crypto["id"], "succeeded"))
            if os.environ.get("BRIDGE_FX_RATES_URL"):
                await _fx_deposit(s, player, show)
            paid = await s.post("/v1/withdrawals", {
                "player_id": player, "amount_minor": 30_00, "currency": "USD", "psp": "adyen",
                "method": "bank_transfer", "destination": "NL91ABNA0417164300"},
                f"{player}-wd-1")
            await show("withdrawal 30.00 requested (Adyen)", paid)
            await s.simulate(f"/_sim/payouts/adyen/{paid['psp_reference']}/complete",
                             {"outcome": "paid"})
            await show("withdrawal paid out (Adyen webhook)", await s.settle(paid["id"], "paid"))
            failed = await s.post("/v1/withdrawals", {
                "player_id": player, "amount_minor": 10_00, "currency": "USD", "psp": "stripe",
                "method": "bank_transfer", "destination": "ba_demo_account"}, f"{player}-wd-2")
            await show("withdrawal 10.00 requested (Stripe)", failed)
            await s.simulate(f"/_sim/payouts/stripe/{failed['psp_reference']}/complete",
                             {"outcome": "failed"})
            done = await s.settle(failed["id"], "payout_failed")
            await show("payout failed at Stripe: funds back to cash", done)
            print(f"\n  history of {done['id']}:")
            for h in done["history"]:
                print(f"    {h['at'][11:23]}  {h['from_state'] or '-':>15} -> "
                      f"{h['to_state']:<15} {h['source']:<8} {h['note']}")
    except (DemoFailed, TimeoutError, aiohttp.ClientError) as err:
        print(f"demo failed: {type(err).__name__}: {err}")
        return 1
    finally:
        await wallet.close()
    return 0
