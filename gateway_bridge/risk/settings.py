"""The fraud and risk rules' settings (docs/RISK.md): a `RiskPolicy` read from BRIDGE_RISK_*.

The policy itself lives with the rules (risk/rules.py), which stay pure; this module parses
it. Each default is written once, on `RiskPolicy`'s fields; `load` reads it from
`_DEFAULTS`. That the scorer's timeout fits inside a request, and which cashier clients may
review held payments (BRIDGE_RISK_SUPPORT_CLIENTS), are the wiring's to check
(gateway_bridge.config), which sees the request timeout and the clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway_bridge.risk.rules import SCORE_MAX, Outcome, RiskPolicy, Threshold
from gateway_bridge.shared.money import AMOUNT_MAX_MINOR, EXPONENTS
from service_kit.settings import EnvReader

# Risk windows: a second up to 90 days (the wagering look-back is the longest in practice).
RISK_WINDOW_MAX_S = 90 * 86_400
RISK_COUNT_MAX = 1_000_000
_PREFIX = "BRIDGE_RISK_"
_DEFAULTS = RiskPolicy()


def load(env: Mapping[str, str], r: EnvReader) -> RiskPolicy:
    p, d = _PREFIX, _DEFAULTS

    def window(name: str, default: int) -> int:
        return r.integer(p + name, default, low=1, high=RISK_WINDOW_MAX_S)

    policy = RiskPolicy(
        enabled=r.flag(p + "ENABLED", d.enabled),
        window_s=window("WINDOW_S", d.window_s),
        player_count=_threshold(r, p + "PLAYER_COUNT", d.player_count, RISK_COUNT_MAX),
        player_amount_minor=_amounts(env, r, p + "PLAYER_AMOUNT_MINOR", d.player_amount_minor),
        instrument_count=_threshold(r, p + "INSTRUMENT_COUNT", d.instrument_count,
                                    RISK_COUNT_MAX),
        instrument_amount_minor=_amounts(env, r, p + "INSTRUMENT_AMOUNT_MINOR",
                                         d.instrument_amount_minor),
        amount_minor=_amounts(env, r, p + "AMOUNT_MINOR", d.amount_minor),
        instrument_players=_threshold(r, p + "INSTRUMENT_PLAYERS", d.instrument_players,
                                      RISK_COUNT_MAX),
        instrument_players_window_s=window("INSTRUMENT_PLAYERS_WINDOW_S",
                                           d.instrument_players_window_s),
        wagering_percent_min=r.integer(p + "WAGERING_PERCENT_MIN", d.wagering_percent_min,
                                       low=0, high=10_000),
        wagering_window_s=window("WAGERING_WINDOW_S", d.wagering_window_s),
        wagering_outcome=_outcome(env, r, p + "WAGERING_DECISION", d.wagering_outcome,
                                  allow=False),
        country_currencies=_countries(env, r, p + "COUNTRY_CURRENCIES", d.country_currencies),
        country_outcome=_outcome(env, r, p + "COUNTRY_DECISION", d.country_outcome,
                                 allow=False),
        scoring_url=env.get(p + "SCORING_URL", d.scoring_url),
        scoring_timeout_ms=r.integer(p + "SCORING_TIMEOUT_MS", d.scoring_timeout_ms,
                                     low=10, high=10_000),
        scoring=_threshold(r, p + "SCORING", d.scoring, SCORE_MAX),
        scoring_failure_outcome=_outcome(env, r, p + "SCORING_FAILURE_DECISION",
                                         d.scoring_failure_outcome, allow=True),
    )
    if policy.scoring_url and not policy.scoring_url.startswith(("http://", "https://")):
        r.problems.append("BRIDGE_RISK_SCORING_URL: expected an http(s):// URL")
    return policy


def _threshold(r: EnvReader, prefix: str, default: Threshold, high: int) -> Threshold:
    """<prefix>_REVIEW_ABOVE and <prefix>_DENY_ABOVE; 0 switches a step off."""
    review = r.integer(prefix + "_REVIEW_ABOVE", default.review_above, low=0, high=high)
    deny = r.integer(prefix + "_DENY_ABOVE", default.deny_above, low=0, high=high)
    if review and deny and review > deny:
        r.problems.append(f"{prefix}_REVIEW_ABOVE: {review} is above {prefix}_DENY_ABOVE "
                          f"({deny}); review must start at or below deny")
    return Threshold(review_above=review, deny_above=deny)


def _json_object(env: Mapping[str, str], r: EnvReader, name: str,
                 problem: str) -> dict[str, Any] | None:
    """An optional setting holding a JSON object: None when unset, and when it is not valid
    JSON or not an object (then `problem` is reported)."""
    raw = env.get(name, "")
    if not raw:
        return None
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        r.problems.append(problem)
        return None
    return parsed


def _amounts(env: Mapping[str, str], r: EnvReader, name: str,
             default: Mapping[str, Threshold]) -> Mapping[str, Threshold]:
    """{"USD": [review_above, deny_above], ...} in minor units; 0 switches a step off."""
    problem = (f'{name}: expected {{"<currency>": [review_above, deny_above], ...}} in '
               f"minor units, each 0..{AMOUNT_MAX_MINOR}, currencies among "
               f"{', '.join(sorted(EXPONENTS))}")
    parsed = _json_object(env, r, name, problem)
    if parsed is None:
        return default
    limits: dict[str, Threshold] = {}
    for currency, pair in parsed.items():
        if (currency not in EXPONENTS or not isinstance(pair, list) or len(pair) != 2
                or not all(type(v) is int and 0 <= v <= AMOUNT_MAX_MINOR for v in pair)):
            r.problems.append(f"{problem} (at {currency!r})")
            continue
        review, deny = pair
        if review and deny and review > deny:
            r.problems.append(f"{name}[{currency}]: review_above {review} is above "
                              f"deny_above {deny}")
        limits[currency] = Threshold(review_above=review, deny_above=deny)
    return limits


def _countries(env: Mapping[str, str], r: EnvReader, name: str,
               default: Mapping[str, frozenset[str]]) -> Mapping[str, frozenset[str]]:
    """{"DE": ["EUR"], "GB": ["GBP", "EUR"], ...}: ISO 3166 alpha-2 -> currencies."""
    problem = f'{name}: expected {{"<country, 2 capitals>": ["<currency>", ...], ...}}'
    parsed = _json_object(env, r, name, problem)
    if parsed is None:
        return default
    countries: dict[str, frozenset[str]] = {}
    for country, currencies in parsed.items():
        if (not (len(country) == 2 and country.isascii() and country.isupper())
                or not isinstance(currencies, list) or not currencies
                or not all(c in EXPONENTS for c in currencies)):
            r.problems.append(f"{problem} (at {country!r}; currencies among "
                              f"{', '.join(sorted(EXPONENTS))})")
            continue
        countries[country] = frozenset(currencies)
    return countries


def _outcome(env: Mapping[str, str], r: EnvReader, name: str, default: Outcome, *,
             allow: bool) -> Outcome:
    raw = env.get(name, "") or default.value
    choices = [o.value for o in Outcome if allow or o is not Outcome.ALLOW]
    if raw not in choices:
        r.problems.append(f"{name}: {raw!r} is not one of {', '.join(choices)}")
        return default
    return Outcome(raw)
