"""FX arithmetic (service_kit.fx): hand-computed conversion tables, the rounding rule, the
spread, bounds, and the proportional share a partial chargeback takes back."""

from __future__ import annotations

from fractions import Fraction

import pytest

from service_kit import fx

EUR_MAX = 100_000_000_000  # the wallet's per-operation cap for EUR (and most fiat)
BIG = 2**62

# (what, paid_minor, paid_scale, rate, wallet_scale, spread_bps, expected credited_minor)
# Each expected value worked out by hand: paid (major) x rate = wallet (major), x the part
# the spread leaves, then down to whole minor units.
CASES = [
    # 0.0015 BTC x 60000 = 90.00 EUR = 9000 c; x 0.985 = 8865 c exactly
    ("BTC->EUR 8->2 exact", 150_000, 8, "60000", 2, 150, 8865),
    # 0.12345678 BTC x 60185.19 = 7430.2695... EUR -> 743026 c (spread 0: just the floor)
    ("BTC->EUR spread 0", 12_345_678, 8, "60185.19", 2, 0, 743_026),
    # the same x 0.985 = 731881.5... -> 731881 c
    ("BTC->EUR spread 150", 12_345_678, 8, "60185.19", 2, 150, 731_881),
    # 999 sat = 0.6012 EUR = 60.12 c; x 0.985 = 59.2 -> 59 c
    ("BTC->EUR small", 999, 8, "60185.19", 2, 150, 59),
    # 1 sat = 0.0006 EUR: less than a cent -> nothing
    ("BTC->EUR one satoshi", 1, 8, "60185.19", 2, 150, 0),
    # 3 sat x 33333.34 = 0.0010000002 EUR = 0.10000002 c -> 0
    ("BTC->EUR just under a tenth of a cent", 3, 8, "33333.34", 2, 0, 0),
    # 25 USDT x 0.92 = 23.00 EUR = 2300 c; x 0.985 = 2265.5 -> 2265
    ("USDT->EUR 6->2", 25_000_000, 6, "0.92", 2, 150, 2265),
    # 100.00 USD x 0.9259 = 92.59 EUR = 9259 c; x 0.985 = 9120.115 -> 9120
    ("USD->EUR 2->2", 10_000, 2, "0.9259", 2, 150, 9120),
    # 10.00 EUR x 161.23 = 1612.3 JPY; x 0.985 = 1588.1155 -> 1588 yen
    ("EUR->JPY 2->0", 1_000, 2, "161.23", 0, 150, 1588),
    # 1000 JPY x 0.0062 = 6.20 EUR = 620 c
    ("JPY->EUR 0->2", 1_000, 0, "0.0062", 2, 0, 620),
    # 1,000,000 JPY x 0.0000001033 = 0.1033 BTC = 10,330,000 sat; x 0.99 = 10,226,700
    ("JPY->BTC 0->8", 1_000_000, 0, "0.0000001033", 8, 100, 10_226_700),
    # exact boundaries: 100.00 x 0.5 = 50.00 exactly; 99.99 x 0.5 = 49.995 -> 49.99
    ("exact half", 10_000, 2, "0.5", 2, 0, 5_000),
    ("just below a whole cent", 9_999, 2, "0.5", 2, 0, 4_999),
    # 3.00 x 0.333333333333 = 0.999999999999 -> 0.99
    ("repeating rate", 300, 2, "0.333333333333", 2, 0, 99),
    # the largest spread keeps exactly half
    ("spread at its maximum", 10_000, 2, "1", 2, 5_000, 5_000),
    # 10,000 BTC x 60000 = 600,000,000.00 EUR: large, under the cap
    ("huge", 1_000_000_000_000, 8, "60000", 2, 0, 60_000_000_000),
    # the cap itself is allowed: 1,000,000,000.00 USD x 1 = the EUR maximum
    ("at the cap", EUR_MAX, 2, "1", 2, 0, EUR_MAX),
    ("zero paid", 0, 8, "60000", 2, 150, 0),
]


@pytest.mark.parametrize(("what", "paid", "paid_scale", "rate", "wallet_scale", "spread",
                          "expected"), CASES, ids=[c[0] for c in CASES])
def test_conversion_table(what: str, paid: int, paid_scale: int, rate: str,
                          wallet_scale: int, spread: int, expected: int) -> None:
    """Each hand-computed case converts to exactly the expected minor units."""
    got = fx.convert(paid_minor=paid, paid_scale=paid_scale, rate=fx.parse_rate(rate),
                     wallet_scale=wallet_scale, spread_bps=spread, credited_max_minor=EUR_MAX)
    assert got == expected, what


def test_never_credits_more_than_the_exact_value() -> None:
    """Rounding is always down: credited <= exact value < credited + 1, for many inputs."""
    rate = fx.parse_rate("60185.19")
    for paid in range(1, 5_000, 37):
        got = fx.convert(paid_minor=paid, paid_scale=8, rate=rate, wallet_scale=2,
                         spread_bps=150, credited_max_minor=BIG)
        exact = Fraction(paid) * rate * Fraction(1, 10**6) * Fraction(9850, 10_000)
        assert got <= exact < got + 1


def test_above_the_cap_is_refused_naming_amount() -> None:
    """100,000 BTC at 60185.19 is ~5.9e11 cents, above EUR's per-operation cap."""
    with pytest.raises(fx.FxError) as err:
        fx.convert(paid_minor=10_000_000_000_000, paid_scale=8,
                   rate=fx.parse_rate("60185.19"), wallet_scale=2, spread_bps=150,
                   credited_max_minor=EUR_MAX)
    assert err.value.field == "amount"


@pytest.mark.parametrize(("text", "exact"), [
    ("60185.19", Fraction(6018519, 100)),
    ("0.0000001033", Fraction(1033, 10**10)),
    ("1", Fraction(1)),
    ("1.000000000000000000000000000000"[:30], Fraction(1)),  # trailing zeros are not digits
    ("0.000000000001", Fraction(1, 10**12)),
    ("1000000000000", Fraction(10**12)),
])
def test_rates_parse_exactly(text: str, exact: Fraction) -> None:
    """A rate string becomes the exact fraction it writes, never a float."""
    assert fx.parse_rate(text) == exact


@pytest.mark.parametrize("text", [
    "", "0", "0.000", "-1", "+1", "1e5", "1E5", "abc", " 1", "1 ", "NaN", "Infinity",
    "0.0000000000001", "10000000000001", "1." + "1" * 30, "1" * 65, "1,5", "0x10",
    # Decimal() takes these; a provider does not mean them (review finding 6)
    "60_000", "60000.", ".5", "\uff16\uff10\uff10\uff10\uff10", "\u0666\u0660\u0660",
    "60000.5\n", "1..5",
])
def test_bad_rates_are_refused_naming_the_field(text: str) -> None:
    """Zero, negative, exponent, junk, out-of-range or over-long rates are refused."""
    with pytest.raises(fx.FxError) as err:
        fx.parse_rate(text, field="conversion.rate")
    assert err.value.field == "conversion.rate"
    assert str(err.value).startswith("conversion.rate: ")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"spread_bps": -1}, "spread_bps"),
    ({"spread_bps": 5_001}, "spread_bps"),
    ({"spread_bps": True}, "spread_bps"),
    ({"paid_minor": -1}, "paid_minor"),
    ({"paid_scale": 19}, "paid_scale"),
    ({"wallet_scale": -1}, "wallet_scale"),
    ({"rate": Fraction(0)}, "rate"),
])
def test_bad_inputs_are_refused_naming_the_field(kwargs: dict[str, object],
                                                 field: str) -> None:
    """Out-of-range inputs raise FxError naming the input."""
    values: dict[str, object] = {"paid_minor": 100, "paid_scale": 2, "rate": Fraction(1),
                                 "wallet_scale": 2, "spread_bps": 0,
                                 "credited_max_minor": EUR_MAX, **kwargs}
    with pytest.raises(fx.FxError) as err:
        fx.convert(**values)  # type: ignore[arg-type]
    assert err.value.field == field


@pytest.mark.parametrize(("total", "whole", "slices", "expected"), [
    # 8865 c credited for 150,000 sat; a third, then the rest
    (8865, 150_000, [50_000, 150_000], [2955, 5910]),
    # 100 c for 3 units, charged back one unit at a time: 33, 33, 34 (sums to 100)
    (100, 3, [1, 2, 3], [33, 33, 34]),
    # a sliver worth less than a cent takes nothing; the rest takes everything left
    (100, 1_000_000, [1, 1_000_000], [0, 100]),
])
def test_proportional_shares_sum_to_the_total(total: int, whole: int, slices: list[int],
                                              expected: list[int]) -> None:
    """Consecutive chargeback slices of a converted deposit take back exactly what was
    credited, never more."""
    before, got = 0, []
    for after in slices:
        got.append(fx.proportional_share(total, part_before=before, part_after=after,
                                         whole=whole))
        before = after
    assert got == expected
    assert sum(got) == total if slices[-1] == whole else sum(got) <= total


def test_share_outside_the_whole_is_refused() -> None:
    """A slice beyond what was paid is a bug in the caller, refused loudly."""
    with pytest.raises(fx.FxError):
        fx.proportional_share(100, part_before=0, part_after=4, whole=3)
