"""Which PSPs may take a payment: routing rules, matched in order (docs/ROUTING.md).

A rule names the payments it covers (direction, methods, currencies, countries, an amount
range in minor units of the payment's currency) and the PSPs eligible for them, in order of
preference, each with a weight. The first rule that matches decides the candidates; a
payment no rule covers is refused before anything is stored (ROUTE_NOT_FOUND). A cashier
request that names a PSP is held to the same rules: it may pin only an eligible PSP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway_bridge.shared.errors import Refused
from gateway_bridge.shared.terms import Direction

WEIGHT_MAX = 1000


class NoRoute(Refused):
    code = "ROUTE_NOT_FOUND"


@dataclass(frozen=True, slots=True)
class Candidate:
    psp: str
    weight: int = 1  # a static share among the rule's PSPs (the static router splits by it)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingRule:
    """An empty set matches anything; `amount_max_minor` None means no upper bound."""

    name: str
    psps: tuple[Candidate, ...]
    direction: Direction | None = None
    methods: frozenset[str] = frozenset()
    currencies: frozenset[str] = frozenset()
    countries: frozenset[str] = frozenset()
    amount_min_minor: int = 0
    amount_max_minor: int | None = None

    def matches(self, r: RouteRequest) -> bool:
        return ((self.direction is None or self.direction is r.direction)
                and (not self.methods or r.method in self.methods)
                and (not self.currencies or r.currency in self.currencies)
                and (not self.countries or r.country in self.countries)
                and self.amount_min_minor <= r.amount_minor
                and (self.amount_max_minor is None or r.amount_minor <= self.amount_max_minor))


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRequest:
    """What routing knows of a payment before it is stored."""

    direction: Direction
    method: str
    currency: str
    amount_minor: int
    country: str = ""
    pinned_psp: str = ""  # the cashier named a PSP


@dataclass(frozen=True, slots=True)
class Eligible:
    rule: str
    candidates: tuple[Candidate, ...]


def eligible(rules: Sequence[RoutingRule], r: RouteRequest) -> Eligible:
    """The candidates of the first rule that covers `r` (only the pinned PSP when the cashier
    named one); NoRoute when none does, or the pinned PSP is not among them."""
    for rule in rules:
        if not rule.matches(r):
            continue
        if not r.pinned_psp:
            return Eligible(rule.name, rule.psps)
        pinned = tuple(c for c in rule.psps if c.psp == r.pinned_psp)
        if not pinned:
            raise NoRoute(f"psp: {r.pinned_psp} is not eligible for this payment (routing "
                          f"rule {rule.name!r} allows {', '.join(c.psp for c in rule.psps)})",
                          field="psp")
        return Eligible(rule.name, pinned)
    where = f"{r.direction} {r.method} {r.currency}" + (f" from {r.country}" if r.country else "")
    raise NoRoute(f"no routing rule covers a {where} of {r.amount_minor} minor units")


@dataclass(frozen=True, slots=True)
class Attempt:
    """A PSP that did not take the payment, and why (`unavailable`, `declined: <code>`)."""

    psp: str
    outcome: str


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """What routing chose for a payment and why (stored on it, shown to support): the PSPs
    in the order to try them, and the attempts that moved it down that order."""

    rule: str
    order: tuple[str, ...]
    reasons: tuple[str, ...]
    pinned: bool = False
    attempts: tuple[Attempt, ...] = ()

    def next_after(self, psp: str, *, attempts_max: int) -> str | None:
        """The PSP to cascade to when `psp` did not take the payment: the next one in the
        order that has not been tried; None when none is left, or when the payment has been
        sent to `attempts_max` PSPs already (`psp` included)."""
        tried = {a.psp for a in self.attempts} | {psp}
        if len(self.attempts) + 1 >= attempts_max:
            return None
        return next((p for p in self.order if p not in tried), None)

    def to_json(self) -> dict[str, Any]:
        values: dict[str, Any] = {"rule": self.rule, "order": list(self.order),
                                  "reasons": list(self.reasons), "pinned": self.pinned}
        if self.attempts:
            values["attempts"] = [{"psp": a.psp, "outcome": a.outcome} for a in self.attempts]
        return values

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RoutingDecision:
        return cls(rule=str(d["rule"]), order=tuple(d["order"]), reasons=tuple(d["reasons"]),
                   pinned=bool(d.get("pinned", False)),
                   attempts=tuple(Attempt(str(a["psp"]), str(a["outcome"]))
                                  for a in d.get("attempts", ())))
