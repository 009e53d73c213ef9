"""What a converted payment is pinned to (docs/FX.md): the rate its credit is sent with, and
the wallet debit of each chargeback. A retry after an unanswered wallet call sends exactly
what was pinned, so the wallet's idempotency key always names one request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class RatePin:
    """The rate a credit is sent to the wallet with (queries.PIN_FX_RATE); `pinned_at` is
    None until it is stored."""

    rate: str
    spread_bps: int
    source: str
    as_of: datetime
    pinned_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ChargebackPin:
    """A dispute of a converted deposit: paid-currency amount and the wallet debit sent."""

    paid_minor: int
    debit_minor: int
