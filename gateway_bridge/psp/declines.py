"""Which card declines may be tried at another PSP (soft) and which never (hard), one table
per PSP (docs/ROUTING.md, "Declines").

A soft decline says "not here, not now": the issuer or the acquirer could not decide (issuer
unavailable, processing error) or refused without a reason another acquirer may not share
(do-not-honour, a generic refusal). The same card at another acquirer often succeeds, which
is what a cascade is for. A hard decline is about the card or the player (stolen, lost,
blocked, expired, insufficient funds, fraud): every acquirer gets the same answer, and the
card schemes fine merchants who keep retrying one. A code that is in neither table is
treated as hard: retrying an unknown refusal is the costly mistake.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum

CODE_MAX_CHARS = 40
_CODE_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


class Decline(StrEnum):
    SOFT = "soft"
    HARD = "hard"


# Stripe: the `decline_code` of a card_error (falling back to its `code`).
STRIPE_SOFT = frozenset({
    "approve_with_id", "card_not_supported", "currency_not_supported", "do_not_honor",
    "generic_decline", "issuer_not_available", "no_action_taken", "processing_error",
    "reenter_transaction", "try_again_later",
})
STRIPE_HARD = frozenset({
    "card_velocity_exceeded", "do_not_try_again", "expired_card", "fraudulent",
    "incorrect_cvc", "incorrect_number", "insufficient_funds", "invalid_account",
    "lost_card", "merchant_blacklist", "pickup_card", "restricted_card",
    "revocation_of_all_authorizations", "security_violation", "stolen_card",
    "stop_payment_order", "transaction_not_allowed", "withdrawal_count_limit_exceeded",
})

# Adyen: the `refusalReasonCode` of a Refused result (its text in `refusalReason`).
ADYEN_SOFT = frozenset({
    "2",   # Refused (no reason given: the do-not-honour of Adyen)
    "3",   # Referral
    "4",   # Acquirer Error
    "9",   # Issuer Unavailable
    "10",  # Not supported (by this acquirer)
    "21",  # Not Submitted
})
ADYEN_HARD = frozenset({
    "5",   # Blocked Card
    "6",   # Expired Card
    "7",   # Invalid Amount
    "8",   # Invalid Card Number
    "12",  # Not enough balance
    "14",  # Acquirer Fraud
    "20",  # FRAUD
    "22",  # FRAUD-CANCELLED
    "23",  # Transaction Not Permitted
    "24",  # CVC Declined
    "25",  # Restricted Card
    "26",  # Revocation Of Auth
    "27",  # Declined Non Generic
    "31",  # Issuer Suspected Fraud
})

SOFT_BY_PSP: Mapping[str, frozenset[str]] = {"stripe": STRIPE_SOFT, "adyen": ADYEN_SOFT}


def clean_code(code: str) -> str:
    """A PSP's decline code as the bridge keeps it (on the payment, in the history): short,
    and nothing but letters, digits and _ . -"""
    return _CODE_UNSAFE.sub("", code)[:CODE_MAX_CHARS]


def classify(psp: str, code: str) -> Decline:
    """SOFT only for the codes `psp`'s table names as worth another acquirer."""
    return Decline.SOFT if code in SOFT_BY_PSP.get(psp, frozenset()) else Decline.HARD
