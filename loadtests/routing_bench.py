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

Prints conversion per strategy and the ratios, and for the learning router how many
deposits it took after the fall to move 80 % of the traffic off `a`, and after the recovery
to move 80 % back (rolling window of 100 deposits). Pure computation: no servers, and every
outcome is known at once (no checkout the payer leaves, no webhook late), so the figures are
the router's best case.
"""

from __future__ import annotations

import argparse
import random
from collections import deque
from collections.abc import Callable

from gateway_bridge.routing.learning import LearningPolicy, Tally, rank
from gateway_bridge.routing.rules import Candidate

DEPOSITS = 10_000
FALL_AT, RECOVER_AT = 3_000, 6_500
WINDOW = 100
SHIFT_SHARE = 0.8
CANDIDATES = (Candidate("a"), Candidate("b"), Candidate("c"))


def approval(psp: str, i: int) -> float:
    if psp == "a":
        return 0.40 if FALL_AT <= i < RECOVER_AT else 0.95
    return {"b": 0.85, "c": 0.70}[psp]


def run(choose: Callable[[int, float], str], learn: Callable[[str, bool, float], None],
        *, per_second: float, seed: int) -> tuple[float, list[str]]:
    market = random.Random(seed)
    picks: list[str] = []
    approved = 0
    for i in range(DEPOSITS):
        now_s = i / per_second
        psp = choose(i, now_s)
        ok = market.random() < approval(psp, i)
        approved += ok
        learn(psp, ok, now_s)
        picks.append(psp)
    return approved / DEPOSITS, picks


def first_index(picks: list[str], start: int, share_of_a: Callable[[float], bool]) -> int | None:
    """Deposits after `start` until the rolling share of `a` satisfies `share_of_a`."""
    window: deque[str] = deque(maxlen=WINDOW)
    for i in range(start, len(picks)):
        window.append(picks[i])
        if len(window) == WINDOW and share_of_a(window.count("a") / WINDOW):
            return i - start + 1
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-second", type=float, default=5.0,
                        help="deposits per second (the policy's half-life is in seconds)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    policy = LearningPolicy()
    rng = random.Random(args.seed + 1)
    tallies: dict[str, Tally] = {}

    def learning(_: int, now_s: float) -> str:
        return rank(CANDIDATES, tallies, {}, policy=policy, now_s=now_s, rng=rng).order[0]

    def learn(psp: str, ok: bool, now_s: float) -> None:
        tallies[psp] = tallies.get(psp, Tally(at_s=now_s)).add(
            success=ok, now_s=now_s, half_life_s=policy.half_life_s)

    static, _ = run(lambda i, t: "a", lambda *_: None, per_second=args.per_second,
                    seed=args.seed)
    oracle, _ = run(lambda i, t: max("abc", key=lambda p: approval(p, i)), lambda *_: None,
                    per_second=args.per_second, seed=args.seed)
    learned, picks = run(learning, learn, per_second=args.per_second, seed=args.seed)
    off = first_index(picks, FALL_AT, lambda share: share <= 1 - SHIFT_SHARE)
    back = first_index(picks, RECOVER_AT, lambda share: share >= SHIFT_SHARE)
    print(f"{DEPOSITS:,} deposits at {args.per_second:g}/s; a 95% -> 40% at {FALL_AT:,}, "
          f"back at {RECOVER_AT:,}; b 85%, c 70%; seed {args.seed}; policy {policy}")
    print("| strategy | conversion | vs oracle | vs static |\n|---|---|---|---|")
    for name, value in (("static (a first)", static), ("learning", learned),
                        ("oracle", oracle)):
        print(f"| {name} | {value:.1%} | {value / oracle:.3f}x | {value / static:.3f}x |")
    print(f"| learning: deposits to move {SHIFT_SHARE:.0%} off a after its fall | "
          f"{off if off is not None else 'never'} | target < 500 | |")
    print(f"| learning: deposits to move {SHIFT_SHARE:.0%} back after its recovery | "
          f"{back if back is not None else 'never'} | target < 500 | |")


if __name__ == "__main__":
    main()
