"""Payment terms the capabilities share: which way the money goes, and what the payer is
told to do. payments/ owns the payment itself; risk/ screens by direction and psp/ returns
instructions, without either importing payments/."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"


@dataclass(frozen=True, slots=True, kw_only=True)
class DepositInstructions:
    """What the player needs: a checkout URL, or a crypto address and amount."""

    psp_reference: str
    checkout_url: str = ""
    pay_address: str = ""
    pay_amount: str = ""
    pay_currency: str = ""
