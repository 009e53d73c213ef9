"""Routing settings (docs/ROUTING.md): the rules, and the learning policy.

BRIDGE_ROUTING_RULES is a JSON list of rules, matched in order; unset, routing is off and
every cashier request names its PSP, as before routing existed. A rule:

    {"name": "cards-eur", "direction": "deposit", "methods": ["card"],
     "currencies": ["EUR"], "countries": ["DE", "AT"], "amount_min_minor": 0,
     "amount_max_minor": 500000, "psps": [{"psp": "adyen", "weight": 3}, "stripe"]}

Only `name` and `psps` are required (a PSP as its name, or with a weight). The policy's
defaults are written once, on LearningPolicy.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway_bridge.routing.learning import LearningPolicy
from gateway_bridge.routing.rules import WEIGHT_MAX, Candidate, RoutingRule
from gateway_bridge.shared.terms import Direction
from service_kit.settings import EnvReader

RULES_MAX = 200
_RULE_FIELDS = frozenset({"name", "direction", "methods", "currencies", "countries",
                          "amount_min_minor", "amount_max_minor", "psps"})


# The PSPs one deposit may be sent to, the first included (a cascade's bound).
ATTEMPTS_MAX_DEFAULT = 3


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    rules: tuple[RoutingRule, ...] = ()
    policy: LearningPolicy = field(default_factory=LearningPolicy)
    attempts_max: int = ATTEMPTS_MAX_DEFAULT

    @property
    def enabled(self) -> bool:
        return bool(self.rules)


def load(env: Mapping[str, str], r: EnvReader, *, psp_names: Collection[str]) -> RoutingSettings:
    d = LearningPolicy()
    policy = LearningPolicy(
        half_life_s=r.integer("BRIDGE_ROUTING_HALF_LIFE_S", int(d.half_life_s), low=1,
                              high=86_400),
        floor_rate=r.integer("BRIDGE_ROUTING_FLOOR_PERCENT", round(d.floor_rate * 100),
                             low=0, high=100) / 100,
        evidence_min=r.integer("BRIDGE_ROUTING_EVIDENCE_MIN", int(d.evidence_min), low=1,
                               high=100_000),
        trickle_share=r.integer("BRIDGE_ROUTING_TRICKLE_PERCENT",
                                round(d.trickle_share * 100), low=0, high=50) / 100)
    attempts_max = r.integer("BRIDGE_ROUTING_ATTEMPTS_MAX", ATTEMPTS_MAX_DEFAULT, low=1,
                             high=10)
    raw = env.get("BRIDGE_ROUTING_RULES", "")
    if not raw.strip():
        return RoutingSettings(policy=policy, attempts_max=attempts_max)
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        r.problems.append("BRIDGE_ROUTING_RULES: not valid JSON")
        return RoutingSettings(policy=policy, attempts_max=attempts_max)
    if not isinstance(parsed, list) or not 1 <= len(parsed) <= RULES_MAX:
        r.problems.append(f"BRIDGE_ROUTING_RULES: a JSON list of 1 to {RULES_MAX} rules")
        return RoutingSettings(policy=policy, attempts_max=attempts_max)
    rules = []
    for i, item in enumerate(parsed):
        problem, rule = _rule(item, psp_names)
        if problem:
            r.problems.append(f"BRIDGE_ROUTING_RULES[{i}]: {problem}")
        elif rule is not None:
            rules.append(rule)
    names = [rule.name for rule in rules]
    if len(set(names)) != len(names):
        r.problems.append("BRIDGE_ROUTING_RULES: rule names must be unique")
    return RoutingSettings(rules=tuple(rules), policy=policy, attempts_max=attempts_max)


def _rule(item: Any, psp_names: Collection[str]) -> tuple[str | None, RoutingRule | None]:
    if not isinstance(item, dict):
        return "a JSON object", None
    unknown = set(item) - _RULE_FIELDS
    if unknown:
        return f"unknown fields {sorted(unknown)}", None
    name = item.get("name")
    if not isinstance(name, str) or not name:
        return "name: a non-empty string", None
    psps = item.get("psps")
    if not isinstance(psps, list) or not psps:
        return "psps: a non-empty list", None
    candidates = []
    for p in psps:
        psp, weight = (p, 1) if isinstance(p, str) else (
            (p.get("psp"), p.get("weight", 1)) if isinstance(p, dict) else (None, None))
        if not isinstance(psp, str) or psp not in psp_names:
            return f"psps: {psp!r} is not an enabled PSP ({', '.join(sorted(psp_names))})", None
        if not isinstance(weight, int) or isinstance(weight, bool) \
                or not 1 <= weight <= WEIGHT_MAX:
            return f"psps: weight of {psp} must be an integer 1..{WEIGHT_MAX}", None
        candidates.append(Candidate(psp, weight))
    if len({c.psp for c in candidates}) != len(candidates):
        return "psps: a PSP is listed twice", None
    direction = item.get("direction")
    if direction is not None and direction not in {d.value for d in Direction}:
        return "direction: deposit or withdrawal", None
    sets: dict[str, frozenset[str]] = {}
    for key in ("methods", "currencies", "countries"):
        values = item.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return f"{key}: a list of strings", None
        sets[key] = frozenset(values)
    low, high = item.get("amount_min_minor", 0), item.get("amount_max_minor")
    if not isinstance(low, int) or isinstance(low, bool) or low < 0:
        return "amount_min_minor: an integer >= 0", None
    if high is not None and (not isinstance(high, int) or isinstance(high, bool) or high < low):
        return "amount_max_minor: an integer >= amount_min_minor", None
    return None, RoutingRule(
        name=name, psps=tuple(candidates),
        direction=Direction(direction) if direction else None, methods=sets["methods"],
        currencies=sets["currencies"], countries=sets["countries"], amount_min_minor=low,
        amount_max_minor=high)
