"""The one small interface every PSP adapter implements, and the values that cross it.

Adding a PSP is one module: verify and parse its webhooks into `PspEvent`s, create a deposit,
create a payout, fetch a status. Adapters do no database work and know nothing of the wallet.

Errors an adapter raises:

    WebhookRejected      the webhook is unsigned, forged, stale or malformed -> HTTP 4xx
    PspError             an outbound call did not succeed
    ├── PspUnavailable   timeout, network error, 5xx/429 after retries, or breaker open:
    │                    the request may or may not have reached the PSP; retry with the
    │                    same idempotency key
    └── PspDeclined      the PSP answered with a definitive refusal (4xx): don't retry
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway_bridge.shared.events import PspEvent
from gateway_bridge.shared.money import AMOUNT_MAX_MINOR
from gateway_bridge.shared.terms import DepositInstructions


class WebhookRejected(Exception):
    """`cause` is a stable label for counters: unsigned, signature, stale, malformed."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message


class PspError(Exception):
    def __init__(self, psp: str, message: str) -> None:
        super().__init__(f"{psp}: {message}")
        self.psp = psp
        self.message = message


class PspUnavailable(PspError):
    """`in_progress`: the PSP has the request in hand (another call with the same key, or a
    payment still processing): its outcome is coming, so nothing may go to another PSP."""

    def __init__(self, psp: str, message: str, *, breaker_open: bool = False,
                 in_progress: bool = False) -> None:
        super().__init__(psp, message)
        self.breaker_open = breaker_open
        self.in_progress = in_progress


class PspDeclined(PspError):
    """`soft`: a card decline another PSP may accept (psp.declines); only a charge says so."""

    def __init__(self, psp: str, message: str, *, status: int, code: str,
                 soft: bool = False) -> None:
        super().__init__(psp, message)
        self.status = status
        self.code = code
        self.soft = soft


@dataclass(frozen=True, slots=True)
class PspConfig:
    """One provider's connection settings. Secrets are never part of repr()."""

    name: str
    base_url: str
    api_key: str = field(repr=False)
    webhook_secret: str = field(repr=False)
    # Adyen's merchant account; unused by the others.
    merchant_account: str = ""
    # Where the PSP should send webhooks when it takes a per-payment URL (NOWPayments).
    callback_url: str = ""
    timeout_ms: int = 5000
    retries_max: int = 2
    retry_backoff_ms: int = 200
    breaker_failures_max: int = 5
    breaker_cooldown_ms: int = 30_000
    # Stripe's replay window for signed timestamps (docs/ARCHITECTURE.md, webhooks).
    webhook_tolerance_s: int = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class DepositOrder:
    payment_id: str
    player_id: str
    amount_minor: int
    currency: str
    method: str
    # Crypto: the asset the player pays in (NOWPayments' pay_currency), e.g. "btc".
    pay_currency: str = ""
    return_url: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeOrder:
    """A server-to-server card payment with a stored card token, captured at once.

    `attempt` counts the PSPs the payment has been sent to (1 for the first): each attempt
    carries an idempotency key of its own, so a PSP never mistakes a cascaded attempt for a
    retry of an earlier one."""

    payment_id: str
    player_id: str
    amount_minor: int
    currency: str
    method: str
    attempt: int
    # The vault's or network token for the card, usable at every PSP; never logged.
    payment_token: str = field(repr=False)

    @property
    def idempotency_key(self) -> str:
        return f"charge-{self.payment_id}-{self.attempt}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundOrder:
    """Give back a captured payment in full: `psp_reference` names the capture at the PSP
    (Stripe's payment intent, Adyen's payment pspReference)."""

    payment_id: str
    psp_reference: str
    amount_minor: int
    currency: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class RefundResult:
    """The PSP's refund reference; `settled` False while the PSP has only accepted the
    refund (Adyen's "received"): its notification tells the outcome."""

    reference: str
    settled: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PayoutOrder:
    payment_id: str
    player_id: str
    amount_minor: int
    currency: str
    method: str
    # Where the money goes: a bank/card token or a crypto address; never logged.
    destination: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRef:
    """Enough of one of our payments to ask the PSP about it."""

    payment_id: str
    direction: str  # "deposit" | "withdrawal"
    psp_reference: str
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class WebhookAck:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """A health probe of a PSP's API (not a payment): did it answer, and take our key."""

    up: bool
    status: int | None  # the HTTP status, None when nothing answered
    duration_s: float
    reason: str


class PspAdapter(Protocol):
    name: str
    ack: WebhookAck
    # A deposit must name the asset the player pays in (DepositOrder.pay_currency).
    needs_pay_currency: bool
    # Takes server-to-server card payments (charge) and refunds them (refund).
    supports_charges: bool

    def read_webhook(self, headers: Mapping[str, str], body: bytes, *,
                     now_s: int) -> list[PspEvent]:
        """Verify the signature on the raw body, then parse; raises WebhookRejected."""
        ...

    @property
    def available(self) -> bool:
        """False while the circuit breaker for this PSP is open."""
        ...

    async def create_deposit(self, order: DepositOrder) -> DepositInstructions: ...

    async def create_payout(self, order: PayoutOrder) -> str:
        """Returns the PSP's payout reference."""
        ...

    async def charge(self, order: ChargeOrder) -> str:
        """Authorises and captures; returns the PSP's reference of the captured payment.
        PspDeclined (with `soft` from psp.declines) when the card was refused."""
        ...

    async def refund(self, order: RefundOrder) -> RefundResult:
        """Refunds a captured payment in full. PspDeclined when the PSP refuses it."""
        ...

    async def fetch_status(self, ref: PaymentRef) -> PspEvent | None:
        """The PSP's current view as an event (event_key marks it a poll), or None when the
        PSP has no status API for this kind of payment."""
        ...

    async def probe(self) -> ProbeResult:
        """A cheap authenticated call that says whether the PSP's API is there."""
        ...

    async def close(self) -> None: ...


# --- Small helpers every adapter uses to read a provider's JSON --------------------------------

# Webhook bodies past this size are refused before parsing: real PSP events are a few KiB.
WEBHOOK_BODY_MAX_BYTES = 1024 * 1024


class ShapeError(ValueError):
    """A PSP document lacks a field we need, or has one of the wrong type. The webhook path
    turns it into WebhookRejected("malformed"); the status path into PspUnavailable."""


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works on aiohttp's CIMultiDict and on a plain dict."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, candidate in headers.items():
        if key.lower() == wanted:
            return candidate
    return None


def json_object(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ShapeError(f"{what}: expected a JSON object")
    return value


def text_field(obj: Mapping[str, object], key: str) -> str | None:
    """A string field, None when absent or empty; numbers are accepted as ids (NOWPayments
    sends payment_id as either)."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ShapeError(f"{key}: expected a string")
    return str(value)


def required_text(obj: Mapping[str, object], key: str) -> str:
    value = text_field(obj, key)
    if value is None:
        raise ShapeError(f"{key}: required")
    return value


def int_field(obj: Mapping[str, object], key: str) -> int | None:
    """A minor-units integer; a bool or a fraction is a malformed document, not a zero."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ShapeError(f"{key}: expected an integer")
    if not 0 <= value <= AMOUNT_MAX_MINOR:
        raise ShapeError(f"{key}: outside 0..2^62")
    return value
