"""Currency conversion arithmetic shared by the wallet and the bridge: exact, integer, no I/O.

A rate is the decimal string a rates provider sends: units of the quote currency per 1 unit
of the base currency ("BTC/EUR" = "60185.19" means 1 BTC buys 60,185.19 EUR). It is parsed
exactly (Decimal -> Fraction), never through a float.

The rounding rule (docs/FX.md):

    credited_minor = floor(paid_minor * rate * 10^(wallet_scale - paid_scale)
                           * (10000 - spread_bps) / 10000)

The spread is taken from the player, and the result is rounded down: the house never credits
a fraction of a minor unit it did not receive. Everything is computed on integers (one
numerator, one denominator, one floor division), so no intermediate step rounds.

Both services call the same function: the bridge to compute what it asks the wallet to
credit, the wallet to check that the amount it was asked for is exactly that.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

BPS_PER_UNIT = 10_000
# The house may keep at most half of what was paid; a larger spread is a configuration bug.
SPREAD_BPS_MAX = 5_000
# Significant digits a rate may carry: real quotes use 8-18; 30 bounds the integer sizes.
RATE_DIGITS_MAX = 30
# Rates between 1e-12 and 1e12: JPY per BTC is ~1e7, BTC per JPY ~1e-7; beyond these
# bounds the string is a provider bug, not a price.
RATE_EXPONENT_MIN = -12
RATE_EXPONENT_MAX = 12
RATE_TEXT_LENGTH_MAX = 64
SCALE_MAX = 18
# Decimal() alone also takes "60_000", "60000.", ".5" and non-ASCII digits (fullwidth,
# Arabic-Indic): none is what a provider means by a rate, and the wallet must read the
# recorded string back exactly as the bridge did. ASCII digits, one optional fraction.
_RATE_TEXT = re.compile(r"[0-9]+(\.[0-9]+)?")


class FxError(ValueError):
    """An input that cannot be converted; `field` names it (rate, spread_bps, amount...)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def parse_rate(text: str, *, field: str = "rate") -> Fraction:
    """The exact value of a decimal rate string; FxError when it is not a sane price."""
    if not isinstance(text, str) or not text or len(text) > RATE_TEXT_LENGTH_MAX:
        raise FxError(field, f"a decimal string of 1..{RATE_TEXT_LENGTH_MAX} characters")
    if text.strip() != text or text[0] in "+-" or "e" in text.lower():
        raise FxError(field, "a plain positive decimal such as \"60185.19\" (no sign, "
                             "exponent or spaces)")
    if not _RATE_TEXT.fullmatch(text):
        raise FxError(field, "ASCII digits with at most one decimal point between digits, "
                             "such as \"60185.19\"")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise FxError(field, "not a decimal number") from None
    if not value.is_finite() or value <= 0:
        raise FxError(field, "must be a finite number above zero")
    # Not normalize(): it rounds to the context's 28 digits, hiding an over-long rate.
    significant = "".join(map(str, value.as_tuple().digits)).strip("0")
    if len(significant) > RATE_DIGITS_MAX:
        raise FxError(field, f"at most {RATE_DIGITS_MAX} significant digits")
    if not Decimal(10) ** RATE_EXPONENT_MIN <= value <= Decimal(10) ** RATE_EXPONENT_MAX:
        raise FxError(field, f"must lie between 1e{RATE_EXPONENT_MIN} and "
                             f"1e{RATE_EXPONENT_MAX}")
    return Fraction(value)


def check_spread(spread_bps: int, *, field: str = "spread_bps") -> int:
    if isinstance(spread_bps, bool) or not isinstance(spread_bps, int) \
            or not 0 <= spread_bps <= SPREAD_BPS_MAX:
        raise FxError(field, f"an integer number of basis points in 0..{SPREAD_BPS_MAX}")
    return spread_bps


def _check_scale(scale: int, field: str) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= SCALE_MAX:
        raise FxError(field, f"a currency scale in 0..{SCALE_MAX}")


def convert(*, paid_minor: int, paid_scale: int, rate: Fraction, wallet_scale: int,
            spread_bps: int, credited_max_minor: int) -> int:
    """Minor units of the wallet currency credited for `paid_minor` minor units paid.

    Rounds down (see the module docstring); 0 when the payment is worth less than one minor
    unit after the spread. FxError names the input that is out of range, or `amount` when
    the result would exceed `credited_max_minor` (the wallet currency's per-operation cap).
    """
    if isinstance(paid_minor, bool) or not isinstance(paid_minor, int) or paid_minor < 0:
        raise FxError("paid_minor", "a non-negative integer of minor units")
    _check_scale(paid_scale, "paid_scale")
    _check_scale(wallet_scale, "wallet_scale")
    if not isinstance(rate, Fraction) or rate <= 0:
        raise FxError("rate", "must be above zero")
    check_spread(spread_bps)
    numerator = paid_minor * rate.numerator * (BPS_PER_UNIT - spread_bps)
    denominator = rate.denominator * BPS_PER_UNIT
    if wallet_scale >= paid_scale:
        numerator *= 10 ** (wallet_scale - paid_scale)
    else:
        denominator *= 10 ** (paid_scale - wallet_scale)
    credited = numerator // denominator  # floor: both are positive
    if credited > credited_max_minor:
        raise FxError("amount", f"converts to {credited} minor units, above the maximum "
                                f"of {credited_max_minor}")
    return credited


def proportional_share(total_minor: int, *, part_before: int, part_after: int,
                       whole: int) -> int:
    """floor(total * after / whole) - floor(total * before / whole): the share of `total`
    that the slice (before, after] of `whole` is worth. Summed over consecutive slices it
    telescopes, so slices that cover the whole come to exactly `total`: a converted deposit
    charged back in parts never takes back more (or less) than was credited."""
    if whole <= 0 or not 0 <= part_before <= part_after <= whole or total_minor < 0:
        raise FxError("part", f"slice ({part_before}, {part_after}] is not within 0..{whole}")
    return total_minor * part_after // whole - total_minor * part_before // whole


def share_not_yet_taken(total_minor: int, *, part_before: int, part: int, whole: int,
                        taken_before: int) -> int:
    """What a slice of `part` after `part_before` (of `whole`) takes of `total`, given that
    `taken_before` was already taken for the parts before it: the cumulative share
    floor(total * min(before + part, whole) / whole) less what was taken, never below zero.

    When `taken_before` is exactly the share of `part_before`, this is proportional_share
    (the slices telescope to `total`). Whatever the slices and their order, `taken_before`
    plus the result never exceeds `total` (if `taken_before` did not), so a deposit charged
    back in parts, some of them retried later, never takes back more than was credited."""
    if whole <= 0 or total_minor < 0 or part_before < 0 or part < 0 or taken_before < 0:
        raise FxError("part", f"slice of {part} after {part_before} of {whole}, "
                              f"{taken_before} of {total_minor} taken: not a valid slice")
    after = min(whole, part_before + part)
    return max(0, total_minor * after // whole - taken_before)
