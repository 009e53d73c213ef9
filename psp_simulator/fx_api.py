"""The simulator's FX rates provider: `GET /fx/rates`, what BRIDGE_FX_RATES_URL points at in
development and tests (docs/FX.md), and its knobs under the control API.

    GET  /fx/rates   {"source": "psp-simulator", "as_of": "<ISO time>",
                      "rates": {"BTC/EUR": "60185.185185", ...}}
    GET  /_sim/fx    the FX knobs and the current overrides
    POST /_sim/fx    {"rates"?: {"BTC/EUR": "60000", "EUR/BTC": null (removes)},
                      "stale_ms"?: as_of this far in the past, "down"?: 503,
                      "latency_ms"?: delay each answer, "reset"?: true (knobs back)}

A rate is quote-currency units per 1 unit of the base, a decimal string. The default table
covers every pair of the bridge's currencies, derived from fixed USD values (the same ones
the NOWPayments half quotes with) to 12 significant digits, so tests can predict it; tests
that check exact credits set their pair explicitly.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

from aiohttp import web

from gateway_bridge.shared.money import EXPONENTS
from psp_simulator.state import ControlError, Simulator, json_response

SOURCE = "psp-simulator"
# USD value of one unit of each currency (as in nowpayments_api.RATES_USD).
USD_VALUES: dict[str, Decimal] = {
    "USD": Decimal("1"), "EUR": Decimal("1.08"), "GBP": Decimal("1.27"),
    "CAD": Decimal("0.73"), "BRL": Decimal("0.18"), "JPY": Decimal("0.0067"),
    "KWD": Decimal("3.25"), "BTC": Decimal("65000"), "USDT": Decimal("1"),
    "USDC": Decimal("1"),
}
RATE_DIGITS = 12
OVERRIDES_MAX = 1_000
STALE_MS_MAX = 30 * 86_400_000
LATENCY_MS_MAX = 120_000


def default_rates() -> dict[str, str]:
    with localcontext() as ctx:
        ctx.prec = RATE_DIGITS
        return {f"{b}/{q}": f"{(USD_VALUES[b] / USD_VALUES[q]).normalize():f}"
                for b, q in itertools.permutations(sorted(USD_VALUES), 2)
                if b in EXPONENTS and q in EXPONENTS}


@dataclass(slots=True)
class FxKnobs:
    overrides: dict[str, str | None] = field(default_factory=dict)
    stale_ms: int = 0
    down: bool = False
    latency_ms: int = 0


class FxSim:
    def __init__(self, sim: Simulator) -> None:
        self.knobs = FxKnobs()
        self._defaults = default_rates()
        sim.on_reset.append(self.reset)

    def reset(self) -> None:
        self.knobs = FxKnobs()

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/fx/rates", self.rates), web.get("/_sim/fx", self.get_knobs),
                web.post("/_sim/fx", self.set_knobs)]

    def table(self) -> dict[str, str]:
        rates = dict(self._defaults)
        for pair, rate in self.knobs.overrides.items():
            if rate is None:
                rates.pop(pair, None)
            else:
                rates[pair] = rate
        return rates

    async def rates(self, request: web.Request) -> web.Response:
        del request
        if self.knobs.latency_ms:
            await asyncio.sleep(self.knobs.latency_ms / 1000)
        if self.knobs.down:
            return json_response(503, {"error": "rates temporarily unavailable"})
        as_of = datetime.now(UTC) - timedelta(milliseconds=self.knobs.stale_ms)
        return json_response(200, {
            "source": SOURCE, "as_of": as_of.isoformat(timespec="milliseconds"),
            "rates": self.table()})

    def _view(self) -> dict[str, object]:
        k = self.knobs
        return {"overrides": k.overrides, "stale_ms": k.stale_ms, "down": k.down,
                "latency_ms": k.latency_ms}

    async def get_knobs(self, request: web.Request) -> web.Response:
        del request
        return json_response(200, self._view())

    async def set_knobs(self, request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            raise ControlError(400, "body must be JSON") from None
        if not isinstance(body, dict):
            raise ControlError(400, "body must be a JSON object")
        if body.get("reset") is True:
            self.reset()
        rates = body.get("rates", {})
        if not isinstance(rates, dict) or len(self.knobs.overrides) + len(rates) > OVERRIDES_MAX:
            raise ControlError(400, f"rates: an object of at most {OVERRIDES_MAX} pairs")
        for pair, rate in rates.items():
            if rate is not None and not isinstance(rate, str):
                raise ControlError(400, f"rates[{pair}]: a decimal string, or null to remove")
            self.knobs.overrides[pair] = rate
        for name, high in (("stale_ms", STALE_MS_MAX), ("latency_ms", LATENCY_MS_MAX)):
            if name in body:
                value = body[name]
                if isinstance(value, bool) or not isinstance(value, int) \
                        or not 0 <= value <= high:
                    raise ControlError(400, f"{name}: an integer in 0..{high}")
                setattr(self.knobs, name, value)
        if "down" in body:
            if not isinstance(body["down"], bool):
                raise ControlError(400, "down: true or false")
            self.knobs.down = body["down"]
        return json_response(200, self._view())
