"""Which eligible PSP to try first: learned from the bridge's own payment outcomes, with a
floor that drops a failing PSP and a trickle that notices when it is back (docs/ROUTING.md).

Each (PSP, method, currency) keeps successes and failures that fade with age (a half-life in
seconds), so the estimate follows a provider that degrades or recovers instead of averaging
its whole history. The order is drawn by Thompson sampling: for each PSP a success rate is
sampled from Beta(1 + successes, 1 + failures) and the PSPs are tried in the order of their
draws. A PSP with little evidence draws widely and so gets tried now and then, which is how a
recovering one is noticed; one with much good evidence wins most draws.

Elimination: an open circuit breaker or a failing health probe takes a PSP out; so does a
faded success rate below the floor once there is enough evidence. An eliminated PSP still
gets a small trickle of payments (`trickle_share`, only when another PSP remains), so its
outcomes keep coming and it returns as soon as they are good again. A PSP is never tried when
nothing else is possible and it is down: the payment then fails fast with the PSP's answer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway_bridge.routing.rules import Candidate


@dataclass(frozen=True, slots=True, kw_only=True)
class LearningPolicy:
    # 30 s: at 5 deposits/s per (PSP, method, currency) it moves traffic off a failing PSP
    # and back within 500 deposits (docs/ROUTING.md, the benchmark); less traffic needs more.
    half_life_s: float = 30.0
    # Below this faded success rate, with at least `evidence_min` faded outcomes, a PSP is
    # taken out of routing (it keeps the trickle).
    floor_rate: float = 0.5
    evidence_min: float = 20.0
    trickle_share: float = 0.05


@dataclass(slots=True)
class Tally:
    """Faded outcome counts of one (PSP, method, currency) as of `at_s`."""

    successes: float = 0.0
    failures: float = 0.0
    at_s: float = 0.0

    def faded(self, now_s: float, half_life_s: float) -> Tally:
        factor = 0.5 ** (max(0.0, now_s - self.at_s) / half_life_s)
        return Tally(self.successes * factor, self.failures * factor, now_s)

    def add(self, *, success: bool, now_s: float, half_life_s: float) -> Tally:
        t = self.faded(now_s, half_life_s)
        if success:
            t.successes += 1
        else:
            t.failures += 1
        return t

    @property
    def evidence(self) -> float:
        return self.successes + self.failures

    @property
    def rate(self) -> float:
        """The posterior mean, Beta(1 + s, 1 + f): 0.5 with no evidence."""
        return (1 + self.successes) / (2 + self.evidence)


@dataclass(frozen=True, slots=True)
class Health:
    breaker_open: bool = False
    probe_down: bool = False


@dataclass(frozen=True, slots=True)
class Ranking:
    """The order to try the PSPs in, and why (shown on the payment)."""

    order: tuple[str, ...]
    reasons: tuple[str, ...]
    eliminated: tuple[str, ...] = field(default=())
    trickle: bool = False


def rank(candidates: Sequence[Candidate], tallies: Mapping[str, Tally],
         health: Mapping[str, Health], *, policy: LearningPolicy, now_s: float,
         rng: random.Random) -> Ranking:
    """The candidates in the order to try them; `tallies` and `health` by PSP (missing:
    no evidence, healthy)."""
    reasons: list[str] = []
    usable: list[str] = []
    out: list[str] = []
    for c in candidates:
        h = health.get(c.psp, Health())
        t = tallies.get(c.psp, Tally()).faded(now_s, policy.half_life_s)
        if h.breaker_open or h.probe_down:
            out.append(c.psp)
            reasons.append(f"{c.psp}: out ({'circuit open' if h.breaker_open else 'probe down'})")
        elif t.evidence >= policy.evidence_min and t.rate < policy.floor_rate:
            out.append(c.psp)
            reasons.append(f"{c.psp}: out (success rate {t.rate:.0%} below the floor "
                           f"{policy.floor_rate:.0%})")
        else:
            usable.append(c.psp)
    floored = [psp for psp in out if not (health.get(psp, Health()).breaker_open
                                           or health.get(psp, Health()).probe_down)]
    if not usable and floored:
        # Every PSP the breakers and probes leave is below the floor: the trouble is the
        # method's, not one PSP's, so they are ranked as usual rather than dropped.
        usable, out, floored = floored, [p for p in out if p not in floored], []
        reasons.append("every PSP still up is below the floor: ranked anyway")
    top = max((c.weight for c in candidates), default=1)
    prior = {c.psp: c.weight / top for c in candidates}
    draws = {psp: _draw(tallies.get(psp, Tally()).faded(now_s, policy.half_life_s),
                        prior.get(psp, 1.0), rng) for psp in usable}
    order = sorted(usable, key=lambda psp: -draws[psp])
    for psp in order:
        t = tallies.get(psp, Tally()).faded(now_s, policy.half_life_s)
        reasons.append(f"{psp}: success rate {t.rate:.0%} over {t.evidence:.0f} recent "
                       f"outcomes, drew {draws[psp]:.2f}")
    trickle = False
    # Only a PSP the rate floor took out gets the trickle: a breaker or a probe reopens it
    # by itself, and sending payments into an open breaker only fails them.
    if floored and order and rng.random() < policy.trickle_share:
        chosen = rng.choice(floored)
        order.insert(0, chosen)
        trickle = True
        reasons.append(f"{chosen}: tried first as the trickle that notices a recovery")
    return Ranking(tuple(order), tuple(reasons), tuple(out), trickle)


def _draw(t: Tally, prior: float, rng: random.Random) -> float:
    """A success rate drawn from Beta(prior + successes, 1 + failures). The rule's weight
    sets `prior` (1 for the heaviest PSP, less for lighter ones): with no evidence, heavier
    PSPs go first more often; with evidence, the outcomes decide."""
    return rng.betavariate(prior + t.successes, 1 + t.failures)


def static_order(candidates: Sequence[Candidate], rng: random.Random) -> tuple[str, ...]:
    """The rules alone: a weighted draw for the first PSP, the rest in rule order (the
    baseline the learning router is measured against)."""
    total = sum(c.weight for c in candidates)
    pick = rng.uniform(0, total)
    first = candidates[-1].psp
    for c in candidates:
        pick -= c.weight
        if pick <= 0:
            first = c.psp
            break
    return (first, *(c.psp for c in candidates if c.psp != first))
