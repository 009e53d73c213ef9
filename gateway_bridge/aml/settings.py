"""AML settings (docs/COMPLIANCE.md). Monitoring is on unless BRIDGE_AML_ENABLED=false; each
rule's threshold is a setting, defaults on aml.rules.AmlPolicy:

    BRIDGE_AML_LARGE_DEPOSIT_MINOR     {"EUR": 1000000, ...}  one deposit this large
    BRIDGE_AML_CUMULATIVE_MINOR        {"EUR": 5000000, ...}  deposits in the window
    BRIDGE_AML_CUMULATIVE_WINDOW_S     2592000 (30 days)
    BRIDGE_AML_STRUCTURING_COUNT_MIN   3   deposits within 10 % under the large-deposit
                                           threshold in BRIDGE_AML_STRUCTURING_WINDOW_S (7 d)
    BRIDGE_AML_INSTRUMENTS_MAX         5   distinct instruments in 30 days
    BRIDGE_AML_CURRENCIES_MAX          3   currencies moved in 24 hours
    BRIDGE_AML_LITTLE_PLAY_PERCENT     30  a withdrawal after bets below this share of
                                           the deposits in BRIDGE_AML_LITTLE_PLAY_WINDOW_S
                                           (30 d); 0 turns the rule off
    BRIDGE_AML_HOLDING_RULES           AML_STRUCTURING,AML_CUMULATIVE_DEPOSITS,
                                       AML_CURRENCY_HOPPING: their open cases hold
                                       the player's withdrawals
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from gateway_bridge.aml.rules import RULES, AmlPolicy
from service_kit.settings import EnvReader


@dataclass(frozen=True, slots=True)
class AmlSettings:
    enabled: bool = True
    policy: AmlPolicy = field(default_factory=AmlPolicy)


def _amounts(env: Mapping[str, str], r: EnvReader, name: str,
             default: Mapping[str, int]) -> Mapping[str, int]:
    raw = env.get(name, "")
    if not raw.strip():
        return default
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
            for k, v in parsed.items()):
        r.problems.append(f'{name}: {{"EUR": 1000000, ...}}: currency to minor units > 0')
        return default
    return {k.upper(): v for k, v in parsed.items()}


def load(env: Mapping[str, str], r: EnvReader) -> AmlSettings:
    d = AmlPolicy()
    holding_raw = env.get("BRIDGE_AML_HOLDING_RULES")
    holding = d.holding_rules
    if holding_raw is not None:
        holding = frozenset(x.strip() for x in holding_raw.split(",") if x.strip())
        if not holding <= RULES:
            r.problems.append(f"BRIDGE_AML_HOLDING_RULES: some of {', '.join(sorted(RULES))}")
    policy = AmlPolicy(
        large_deposit_minor=_amounts(env, r, "BRIDGE_AML_LARGE_DEPOSIT_MINOR",
                                     d.large_deposit_minor),
        cumulative_minor=_amounts(env, r, "BRIDGE_AML_CUMULATIVE_MINOR", d.cumulative_minor),
        cumulative_window_s=r.integer("BRIDGE_AML_CUMULATIVE_WINDOW_S", d.cumulative_window_s,
                                      low=60, high=366 * 86_400),
        structuring_count_min=r.integer("BRIDGE_AML_STRUCTURING_COUNT_MIN",
                                        d.structuring_count_min, low=2, high=100),
        structuring_window_s=r.integer("BRIDGE_AML_STRUCTURING_WINDOW_S",
                                       d.structuring_window_s, low=60, high=366 * 86_400),
        instruments_max=r.integer("BRIDGE_AML_INSTRUMENTS_MAX", d.instruments_max, low=1,
                                  high=1000),
        currencies_max=r.integer("BRIDGE_AML_CURRENCIES_MAX", d.currencies_max, low=1,
                                 high=100),
        little_play_percent=r.integer("BRIDGE_AML_LITTLE_PLAY_PERCENT",
                                      d.little_play_percent, low=0, high=1000),
        little_play_window_s=r.integer("BRIDGE_AML_LITTLE_PLAY_WINDOW_S",
                                       d.little_play_window_s, low=3600,
                                       high=366 * 86_400),
        holding_rules=holding)
    return AmlSettings(enabled=r.flag("BRIDGE_AML_ENABLED", True), policy=policy)
