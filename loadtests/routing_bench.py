"""`python -m loadtests.routing_bench`: the router against a drifting market (docs/ROUTING.md).

10,000 simulated deposits over three PSPs whose approval rates change during the run: `a` is
the best until it falls from 95 % to 40 % at deposit 3,000 and recovers at deposit 6,500,
`b` holds 85 %, `c` holds 70 %. Deposits arrive at a steady rate (`--per-second`), and each
is sent to one PSP, which approves it with that PSP's current probability (one seeded random
stream per strategy, the same approvals for the same draws). Three strategies:

- static: the rules alone, `a` first (what a single-acquirer casino does);
- learning: gateway_bridge.routing.learning.rank with the default policy, learning from
  every outcome it sees (as the bridge does from bridge.routing_tallies);
- oracle: always the PSP with the highest approval at that moment (an upper bound).

Each strategy runs twice: sending each deposit to its first PSP only, and cascading a soft
decline down its order (at most 3 PSPs, gateway_bridge.routing.settings). Half the declines
are soft (the simulator's default share), and a soft decline tried elsewhere is approved with
that PSP's own rate: the decline was the acquirer's, not the card's. That is the best case
for a cascade; declines the issuer means at every acquirer only repeat.

Prints, over `--seeds` seeded runs (median, min and max), conversion per strategy and the
ratios, and for the learning router how many deposits it took after the fall to move 80 % of
the traffic off `a`, and after the recovery to move 80 % back (rolling window of 100
deposits). Pure computation: no servers, and every
outcome is known at once (no checkout the payer leaves, no webhook late), so the figures are
the router's best case.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import deque
from collections.abc import Callable

from gateway_bridge.routing.learning import LearningPolicy, Tally, rank
from gateway_bridge.routing.rules import Candidate
from gateway_bridge.routing.settings import ATTEMPTS_MAX_DEFAULT

DEPOSITS = 10_000
FALL_AT, RECOVER_AT = 3_000, 6_500
WINDOW = 100
SHIFT_SHARE = 0.8
CANDIDATES = (Candidate("a"), Candidate("b"), Candidate("c"))
SOFT_SHARE = 0.5
ATTEMPTS_MAX = ATTEMPTS_MAX_DEFAULT


def approval(psp: str, i: int) -> float:
    if psp == "a":
        return 0.40 if FALL_AT <= i < RECOVER_AT else 0.95
    return {"b": 0.85, "c": 0.70}[psp]


def run(choose: Callable[[int, float], tuple[str, ...]],
        learn: Callable[[str, bool, float], None], *, per_second: float, seed: int,
        cascade: bool) -> tuple[float, list[str]]:
    """Conversion, and the first PSP each deposit went to."""
    market = random.Random(seed)
    picks: list[str] = []
    approved = 0
    for i in range(DEPOSITS):
        now_s = i / per_second
        order = choose(i, now_s)
        picks.append(order[0])
        for psp in order[:ATTEMPTS_MAX if cascade else 1]:
            ok = market.random() < approval(psp, i)
            learn(psp, ok, now_s)
            if ok:
                approved += 1
                break
            if not cascade or market.random() >= SOFT_SHARE:
                break  # a hard decline is never tried elsewhere
    return approved / DEPOSITS, picks


class LearningRouter:
    """routing.learning.rank over tallies it keeps itself, as the bridge keeps them in
    bridge.routing_tallies."""

    def __init__(self, policy: LearningPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng
        self._tallies: dict[str, Tally] = {}

    def choose(self, _: int, now_s: float) -> tuple[str, ...]:
        return rank(CANDIDATES, self._tallies, {}, policy=self._policy, now_s=now_s,
                    rng=self._rng).order

    def learn(self, psp: str, ok: bool, now_s: float) -> None:
        self._tallies[psp] = self._tallies.get(psp, Tally(at_s=now_s)).add(
            success=ok, now_s=now_s, half_life_s=self._policy.half_life_s)


def static_order(_: int, __: float) -> tuple[str, ...]:
    return ("a", "b", "c")


def oracle_order(i: int, _: float) -> tuple[str, ...]:
    return tuple(sorted("abc", key=lambda p: -approval(p, i)))


def first_index(picks: list[str], start: int, share_of_a: Callable[[float], bool]) -> int | None:
    """Deposits after `start` until the rolling share of `a` satisfies `share_of_a`."""
    window: deque[str] = deque(maxlen=WINDOW)
    for i in range(start, len(picks)):
        window.append(picks[i])
        if len(window) == WINDOW and share_of_a(window.count("a") / WINDOW):
            return i - start + 1
    return None


Figures = dict[str, float]


def one_seed(policy: LearningPolicy, *, per_second: float, seed: int) -> Figures:
    """Every figure of one seeded run, by name."""
    results: dict[tuple[str, bool], tuple[float, list[str]]] = {}
    for cascade in (False, True):
        router = LearningRouter(policy, random.Random(seed + 1))
        for name, choose, teach in (("static", static_order, None),
                                    ("learning", router.choose, router.learn),
                                    ("oracle", oracle_order, None)):
            results[(name, cascade)] = run(choose, teach or (lambda *_: None),
                                           per_second=per_second, seed=seed, cascade=cascade)
    figures: Figures = {}
    plain_static = results[("static", False)][0]
    for (name, cascade), (value, picks) in results.items():
        label = f"{name}{' + cascade' if cascade else ''}"
        figures[f"{label}: conversion %"] = value * 100
        if name == "learning":
            figures[f"{label} vs oracle{' + cascade' if cascade else ''}"] = (
                value / results[("oracle", cascade)][0])
            figures[f"{label} vs static{' + cascade' if cascade else ''}"] = (
                value / results[("static", cascade)][0])
            if cascade:
                figures[f"{label} vs static"] = value / plain_static
            off = first_index(picks, FALL_AT, lambda share: share <= 1 - SHIFT_SHARE)
            back = first_index(picks, RECOVER_AT, lambda share: share >= SHIFT_SHARE)
            figures[f"{label}: deposits to move 80% off a"] = off or float("inf")
            figures[f"{label}: deposits to move 80% back to a"] = back or float("inf")
    return figures


TARGETS = {"vs oracle": ">= 0.95x", " vs static": ">= 1.2x", "deposits to move": "< 500"}


def _target(name: str) -> str:
    return next((t for key, t in TARGETS.items() if key in name and "static +" not in name),
                "")


def _value(name: str, value: float) -> str:
    if value == float("inf"):
        return "never"
    if " vs " in name:
        return f"{value:.3f}x"
    return f"{value:.1f}" if name.endswith("%") else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-second", type=float, default=5.0,
                        help="deposits per second (the policy's half-life is in seconds)")
    parser.add_argument("--seeds", type=int, default=10, help="runs, seeds 1..N")
    defaults = LearningPolicy()
    parser.add_argument("--half-life-s", type=float, default=defaults.half_life_s)
    parser.add_argument("--trickle-percent", type=float,
                        default=defaults.trickle_share * 100)
    args = parser.parse_args()
    policy = LearningPolicy(half_life_s=args.half_life_s,
                            trickle_share=args.trickle_percent / 100)
    runs = [one_seed(policy, per_second=args.per_second, seed=seed)
            for seed in range(1, args.seeds + 1)]
    print(f"{DEPOSITS:,} deposits at {args.per_second:g}/s; a 95% -> 40% at {FALL_AT:,}, "
          f"back at {RECOVER_AT:,}; b 85%, c 70%; soft share {SOFT_SHARE:.0%}, at most "
          f"{ATTEMPTS_MAX} PSPs per deposit; seeds 1..{args.seeds}; {policy}")
    print("| figure | median | min | max | target |\n|---|---|---|---|---|")
    for name in runs[0]:
        values = sorted(r[name] for r in runs)
        print(f"| {name} | {_value(name, statistics.median(values))} | "
              f"{_value(name, values[0])} | {_value(name, values[-1])} | {_target(name)} |")


if __name__ == "__main__":
    main()
