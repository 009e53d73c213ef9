"""A paid amount in the wallet's currency: the one conversion rule the cashier's quote and
the inbox's credit share (the arithmetic itself is service_kit.fx)."""

from __future__ import annotations

from fractions import Fraction

from gateway_bridge.shared import money
from gateway_bridge.shared.errors import FxRefused
from service_kit import fx


def convert(amount_minor: int, *, currency: str, wallet_currency: str, rate: Fraction,
            spread_bps: int) -> int:
    """`amount_minor` of `currency` in minor units of `wallet_currency` (service_kit.fx:
    spread taken, rounded down); FxRefused when it would exceed the wallet currency's
    per-operation cap (money.OPERATION_MAX_MINOR): at the cashier that is a 422 before the
    PSP is asked for anything."""
    try:
        return fx.convert(paid_minor=amount_minor, paid_scale=money.exponent(currency),
                          rate=rate, wallet_scale=money.exponent(wallet_currency),
                          spread_bps=spread_bps,
                          credited_max_minor=money.operation_max_minor(wallet_currency))
    except fx.FxError as err:
        raise FxRefused(f"amount_minor: {err.problem}", code="FX_AMOUNT_TOO_LARGE",
                        field="amount_minor") from None
