"""PSP routing's pure parts: which PSPs a rule allows, and the order learning puts them in."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway_bridge.routing.learning import Health, LearningPolicy, Tally, rank, static_order
from gateway_bridge.routing.rules import Candidate, NoRoute, RouteRequest, RoutingRule, eligible
from gateway_bridge.shared.terms import Direction

CARD_EUR = RoutingRule(name="card-eur", direction=Direction.DEPOSIT,
                       methods=frozenset({"card"}), currencies=frozenset({"EUR"}),
                       amount_max_minor=500_000,
                       psps=(Candidate("adyen", 3), Candidate("stripe", 1)))
CRYPTO = RoutingRule(name="crypto", methods=frozenset({"crypto"}),
                     psps=(Candidate("nowpayments"),))
ANY_CARD = RoutingRule(name="cards", methods=frozenset({"card"}),
                       countries=frozenset({"DE", "AT"}), psps=(Candidate("stripe"),))
RULES = (CARD_EUR, CRYPTO, ANY_CARD)
POLICY = LearningPolicy()


def request(**changes: object) -> RouteRequest:
    values: dict[str, object] = {"direction": Direction.DEPOSIT, "method": "card",
                                 "currency": "EUR", "amount_minor": 10_000} | changes
    return RouteRequest(**values)  # type: ignore[arg-type]


def test_the_first_rule_that_covers_the_payment_decides() -> None:
    assert eligible(RULES, request()).rule == "card-eur"
    assert [c.psp for c in eligible(RULES, request()).candidates] == ["adyen", "stripe"]
    # Above the first rule's range, the country rule takes it.
    assert eligible(RULES, request(amount_minor=600_000, country="DE")).rule == "cards"
    assert eligible(RULES, request(method="crypto", currency="USD")).rule == "crypto"


def test_a_payment_no_rule_covers_is_refused_with_what_it_was() -> None:
    with pytest.raises(NoRoute, match="no routing rule covers a deposit card USD from FR") as e:
        eligible(RULES, request(currency="USD", country="FR"))
    assert e.value.code == "ROUTE_NOT_FOUND"


def test_a_pinned_psp_must_be_eligible() -> None:
    assert [c.psp for c in eligible(RULES, request(pinned_psp="stripe")).candidates] == [
        "stripe"]
    with pytest.raises(NoRoute, match="nowpayments is not eligible") as e:
        eligible(RULES, request(pinned_psp="nowpayments"))
    assert e.value.field == "psp"


def test_a_withdrawal_is_not_routed_by_a_deposit_rule() -> None:
    assert eligible(RULES, request(direction=Direction.WITHDRAWAL, country="AT")).rule == "cards"


def orders(tallies: dict[str, Tally], health: dict[str, Health] | None = None, *,
           n: int = 2000, seed: int = 1) -> Counter[str]:
    rng = random.Random(seed)
    cands = (Candidate("a"), Candidate("b"), Candidate("c"))
    return Counter(rank(cands, tallies, health or {}, policy=POLICY, now_s=0.0,
                        rng=rng).order[0] for _ in range(n))


def test_the_psp_with_the_best_record_goes_first_most_of_the_time() -> None:
    first = orders({"a": Tally(95, 5), "b": Tally(80, 20), "c": Tally(60, 40)})
    assert first["a"] > 0.95 * sum(first.values())


def test_a_psp_without_evidence_is_still_tried_sometimes() -> None:
    first = orders({"a": Tally(90, 10), "b": Tally(85, 15)})
    assert 0 < first["c"] < first["a"], "exploration: c has no record yet"


def test_old_outcomes_fade() -> None:
    old_failures = Tally(0, 100, at_s=-10 * POLICY.half_life_s)
    faded = old_failures.faded(0.0, POLICY.half_life_s)
    assert faded.failures == pytest.approx(100 / 1024)
    grown = Tally(10, 0, at_s=-POLICY.half_life_s).add(success=True, now_s=0.0,
                                                       half_life_s=POLICY.half_life_s)
    assert (grown.successes, grown.failures) == (pytest.approx(6.0), 0.0)


def test_an_open_breaker_or_a_failing_probe_takes_a_psp_out() -> None:
    tallies = {"a": Tally(99, 1), "b": Tally(50, 50), "c": Tally(50, 50)}
    for health in ({"a": Health(breaker_open=True)}, {"a": Health(probe_down=True)}):
        first = orders(tallies, health)
        assert first["a"] == 0, "no trickle into an open breaker or a down probe"
    ranking = rank((Candidate("a"), Candidate("b")), tallies, {"a": Health(breaker_open=True)},
                   policy=POLICY, now_s=0.0, rng=random.Random(1))
    assert ranking.order == ("b",) and ranking.eliminated == ("a",)
    assert any("circuit open" in r for r in ranking.reasons)


def test_below_the_floor_a_psp_keeps_only_the_trickle() -> None:
    tallies = {"a": Tally(10, 90), "b": Tally(70, 30), "c": Tally(60, 40)}
    first = orders(tallies, n=4000)
    share = first["a"] / 4000
    assert 0.02 < share < 0.09, share  # the trickle share is 5 %
    ranking = rank((Candidate("a"), Candidate("b")), tallies, {}, policy=POLICY, now_s=0.0,
                   rng=random.Random(3))
    assert ranking.eliminated == ("a",) and any("below the floor" in r for r in ranking.reasons)


def test_the_static_order_splits_by_weight() -> None:
    rng = random.Random(5)
    first = Counter(static_order(CARD_EUR.psps, rng)[0] for _ in range(4000))
    assert 0.7 < first["adyen"] / 4000 < 0.8  # 3 : 1
    assert sorted(static_order(CARD_EUR.psps, rng)) == ["adyen", "stripe"]


def test_when_every_psp_is_below_the_floor_they_are_ranked_anyway() -> None:
    tallies = {"a": Tally(10, 90), "b": Tally(30, 70), "c": Tally(5, 95)}
    first = orders(tallies, n=1000)
    assert set(first) <= {"a", "b", "c"} and first["b"] > 0.8 * 1000
    ranking = rank((Candidate("a"), Candidate("b")), tallies, {}, policy=POLICY, now_s=0.0,
                   rng=random.Random(2))
    assert sorted(ranking.order) == ["a", "b"] and ranking.eliminated == ()
    assert any("ranked anyway" in r for r in ranking.reasons)


def test_without_evidence_the_heavier_psp_goes_first_more_often() -> None:
    rng = random.Random(4)
    heavy = (Candidate("adyen", 9), Candidate("stripe", 1))
    first = Counter(rank(heavy, {}, {}, policy=POLICY, now_s=0.0, rng=rng).order[0]
                    for _ in range(4000))
    assert first["adyen"] > 0.6 * 4000 and first["stripe"] > 0.05 * 4000
    # With evidence, outcomes outweigh the weights.
    learned = {"adyen": Tally(10, 90), "stripe": Tally(90, 10)}
    first = Counter(rank(heavy, learned, {}, policy=POLICY, now_s=0.0, rng=rng).order[0]
                    for _ in range(1000))
    assert first["stripe"] > 0.9 * 1000
