"""Currencies and amounts: integer minor units with a fixed scale per currency.

A balance is kept in Postgres `bigint`; BALANCE_MAX_MINOR leaves room so that no sum of a
balance and one accepted amount can overflow int64 (amounts are capped per currency far
below it).
"""

from __future__ import annotations

from dataclasses import dataclass

INT64_MAX = 2**63 - 1
# Half of int64: a balance plus any accepted amount (capped below this too) cannot overflow.
BALANCE_MAX_MINOR = 2**62


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    scale: int  # digits after the decimal point: USD 2, JPY 0, KWD 3, BTC 8, USDT 6
    amount_max_minor: int  # largest single operation amount accepted

    def format(self, amount_minor: int) -> str:
        """Human display only (demo, reports); never parsed back."""
        sign = "-" if amount_minor < 0 else ""
        units, minor = divmod(abs(amount_minor), 10**self.scale)
        if self.scale == 0:
            return f"{sign}{units} {self.code}"
        return f"{sign}{units}.{minor:0{self.scale}d} {self.code}"
