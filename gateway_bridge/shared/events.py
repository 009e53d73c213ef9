"""What a PSP told us, normalized: every adapter turns its webhooks and status answers into
`PspEvent`s, so the payment state machine never sees a provider's own vocabulary.

`event_key` is the provider's event identity (docs/ARCHITECTURE.md, webhooks: Stripe's event
id; Adyen's (pspReference, eventCode, success); NOWPayments' (payment_id, payment_status)).
The inbox stores one row per (psp, event_key), which is what makes redelivery harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EventKind(StrEnum):
    DEPOSIT_PENDING = "deposit_pending"      # seen by the PSP, not final (crypto confirming)
    DEPOSIT_SUCCEEDED = "deposit_succeeded"  # funds captured: credit the wallet
    DEPOSIT_PARTIAL = "deposit_partial"      # crypto: less arrived than was asked for
    DEPOSIT_FAILED = "deposit_failed"        # declined, refused, refunded before credit
    DEPOSIT_EXPIRED = "deposit_expired"      # the payer never paid
    PAYOUT_PENDING = "payout_pending"        # accepted by the PSP, in flight
    PAYOUT_PAID = "payout_paid"              # money left: commit the withdrawal
    PAYOUT_FAILED = "payout_failed"          # failed, declined, expired, cancelled
    PAYOUT_REVERSED = "payout_reversed"      # returned after it was reported paid
    CHARGEBACK = "chargeback"                # dispute lost/opened with funds withdrawn
    REFUND_SETTLED = "refund_settled"        # a refund the bridge asked for went through
    REFUND_FAILED = "refund_failed"          # ... or did not
    IGNORED = "ignored"                      # a valid event we have no use for


@dataclass(frozen=True, slots=True, kw_only=True)
class PspEvent:
    psp: str
    event_key: str
    kind: EventKind
    # The provider's own type/code/status, kept for the payment's history.
    psp_event_type: str
    # Our payment id when the provider echoes it (metadata, merchantReference, order_id).
    payment_id: str | None = None
    # The provider's id of the payment or payout the event is about.
    psp_reference: str | None = None
    # A second provider id learned from this event (Stripe's payment_intent of a session).
    psp_reference_alt: str | None = None
    # Minor units of `currency` the event attests; None when the event carries no amount.
    amount_minor: int | None = None
    currency: str | None = None
    # Chargebacks: the dispute's own id (one wallet debit per dispute).
    dispute_reference: str | None = None
    # Crypto: what actually arrived, in minor units of `currency` (partial payments).
    received_minor: int | None = None
