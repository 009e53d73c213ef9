"""FX settings (docs/FX.md): the rates provider's URL (empty: FX off, paying in another
currency is refused), the spread taken from the player, the oldest rate used (by the
provider's as_of), and the provider's timeout. Read from BRIDGE_FX_*.

Each default is written once, on its field below; `load` reads it from `_DEFAULTS`. The
timeout's bounds against the request and transaction budgets are the wiring's to check
(gateway_bridge.config), which sees those settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from service_kit.fx import SPREAD_BPS_MAX
from service_kit.settings import EnvReader


@dataclass(frozen=True, slots=True)
class FxSettings:
    # Kept out of repr(): providers put API keys in the URL.
    rates_url: str = field(default="", repr=False)
    spread_bps: int = 150
    rate_age_max_ms: int = 60_000
    timeout_ms: int = 2_000


_DEFAULTS = FxSettings()


def load(env: Mapping[str, str], r: EnvReader) -> FxSettings:
    d = _DEFAULTS
    settings = FxSettings(
        rates_url=env.get("BRIDGE_FX_RATES_URL", d.rates_url),
        spread_bps=r.integer("BRIDGE_FX_SPREAD_BPS", d.spread_bps, low=0, high=SPREAD_BPS_MAX),
        rate_age_max_ms=r.integer("BRIDGE_FX_RATE_AGE_MAX_MS", d.rate_age_max_ms, low=100,
                                  high=86_400_000),
        timeout_ms=r.integer("BRIDGE_FX_TIMEOUT_MS", d.timeout_ms, low=10, high=30_000),
    )
    if settings.rates_url and not settings.rates_url.startswith(("http://", "https://")):
        r.problems.append("BRIDGE_FX_RATES_URL: expected an http(s):// URL (empty: FX off)")
    return settings
