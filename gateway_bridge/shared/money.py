"""Money at the bridge's edge: PSPs send minor-unit integers (Stripe, Adyen) or decimal
strings and JSON numbers (NOWPayments); everything inside is an int of minor units.

Conversions never round silently: an amount with more decimals than the currency has is an
error, not a truncation.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# ISO 4217 exponents (and the crypto assets the wallet keeps) the bridge accepts. The wallet
# holds its own table; a currency the wallet doesn't know is refused there as well.
EXPONENTS: dict[str, int] = {
    "USD": 2, "EUR": 2, "GBP": 2, "CAD": 2, "BRL": 2, "JPY": 0, "KWD": 3,
    "BTC": 8, "USDT": 6, "USDC": 6,
}
# Same bound as the wallet's balances: far above any payment, far below int64 overflow.
AMOUNT_MAX_MINOR = 2**62
# The wallet's per-operation cap of each currency (wallet.currencies.amount_max_minor,
# wallet migrations 0001 and 0006), copied so a converted deposit whose credit would exceed
# it is refused at the cashier, before the PSP is paid, rather than by the wallet at credit
# time. Should the wallet's table lower a cap, the wallet still refuses (the credit is then
# dead-lettered for support, docs/FX.md); a currency missing here falls back to
# AMOUNT_MAX_MINOR.
OPERATION_MAX_MINOR: dict[str, int] = {
    "USD": 100_000_000_000, "EUR": 100_000_000_000, "GBP": 100_000_000_000,
    "CAD": 100_000_000_000, "BRL": 500_000_000_000, "JPY": 100_000_000_000,
    "KWD": 100_000_000_000, "BTC": 10_000_000_000_000, "USDT": 1_000_000_000_000_000,
    "USDC": 1_000_000_000_000_000,
}


class AmountError(ValueError):
    """The amount can't be represented exactly in the currency's minor units."""


def exponent(currency: str) -> int:
    try:
        return EXPONENTS[currency]
    except KeyError:
        raise AmountError(f"unsupported currency {currency!r}") from None


def operation_max_minor(currency: str) -> int:
    """The largest amount of `currency` the wallet moves in one operation."""
    return OPERATION_MAX_MINOR.get(currency, AMOUNT_MAX_MINOR)


def to_minor(value: Decimal | str | int, currency: str) -> int:
    try:
        amount = Decimal(value) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise AmountError(f"not a decimal amount: {value!r}") from None
    if not amount.is_finite():
        raise AmountError("amount is not finite")
    scaled = amount.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise AmountError(f"more decimals than {currency} has ({exponent(currency)})")
    minor = int(scaled)
    if abs(minor) > AMOUNT_MAX_MINOR:
        raise AmountError("amount out of range")
    return minor


def to_decimal(amount_minor: int, currency: str) -> Decimal:
    return Decimal(amount_minor).scaleb(-exponent(currency))


def format_major(amount_minor: int, currency: str) -> str:
    """Decimal string PSPs that take major units expect, e.g. 1050 USD -> "10.50"."""
    return f"{to_decimal(amount_minor, currency):f}"
