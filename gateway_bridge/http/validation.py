"""Cashier request fields: parsed from JSON, checked, and named in every error."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from gateway_bridge.shared.errors import InvalidRequest
from gateway_bridge.shared.money import AMOUNT_MAX_MINOR, EXPONENTS

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,63}")
_METHOD = re.compile(r"[a-z][a-z0-9_]{0,31}")
_ASSET = re.compile(r"[a-z0-9]{2,16}")
_PRINTABLE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?")
_URL = re.compile(r"https?://[\x21-\x7e]{1,2040}")
IDEMPOTENCY_KEY_LENGTH_MAX = 128


def idempotency_key(headers: Mapping[str, str]) -> str:
    value = headers.get("Idempotency-Key", "")
    if not value:
        raise InvalidRequest("Idempotency-Key", "header required: retries of one payment "
                                                "request must carry the same key")
    if len(value) > IDEMPOTENCY_KEY_LENGTH_MAX or not _PRINTABLE.fullmatch(value):
        raise InvalidRequest("Idempotency-Key", f"printable ASCII, at most "
                                                f"{IDEMPOTENCY_KEY_LENGTH_MAX} characters")
    return value


def _get(body: Mapping[str, Any], field: str, *, required: bool = True) -> Any:
    value = body.get(field)
    if value is None and required:
        raise InvalidRequest(field, "required")
    return value


def _text(body: Mapping[str, Any], field: str, pattern: re.Pattern[str], problem: str, *,
          required: bool = True) -> str:
    value = _get(body, field, required=required)
    if value is None:
        return ""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidRequest(field, problem)
    return value


def player_id(body: Mapping[str, Any]) -> str:
    return _text(body, "player_id", _IDENTIFIER, "letters, digits and _ . : @ -, starting "
                                                 "with a letter or digit, at most 64")


def amount_minor(body: Mapping[str, Any]) -> int:
    value = _get(body, "amount_minor")
    # bool is an int in Python; `true` is not an amount.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest("amount_minor", "an integer count of minor units (e.g. cents)")
    if not 0 < value <= AMOUNT_MAX_MINOR:
        raise InvalidRequest("amount_minor", "must be positive and at most 2^62")
    return value


def currency(body: Mapping[str, Any]) -> str:
    value = _get(body, "currency")
    if not isinstance(value, str) or value not in EXPONENTS:
        raise InvalidRequest("currency", f"one of {', '.join(sorted(EXPONENTS))}")
    return value


def wallet_currency(body: Mapping[str, Any], paid_currency: str) -> str:
    """The wallet credited when the player pays in `currency` (docs/FX.md); "" when absent
    or the same currency (no conversion)."""
    value = _get(body, "wallet_currency", required=False)
    if value is None:
        return ""
    if not isinstance(value, str) or value not in EXPONENTS:
        raise InvalidRequest("wallet_currency", f"the wallet credited, one of "
                                                f"{', '.join(sorted(EXPONENTS))}")
    return "" if value == paid_currency else value


def psp(body: Mapping[str, Any], enabled: Collection[str], *, routed: bool = False) -> str:
    """The PSP the cashier names; with routing on it may name none ("": routing chooses)."""
    if routed and body.get("psp") is None:
        return ""
    value = _get(body, "psp")
    if not isinstance(value, str) or value not in enabled:
        optional = " (or none: routing chooses)" if routed else ""
        raise InvalidRequest("psp", f"one of {', '.join(sorted(enabled))}{optional}")
    return value


def method(body: Mapping[str, Any]) -> str:
    return _text(body, "method", _METHOD, "lower-case letters, digits and _, at most 32 "
                                          "(e.g. card, bank_transfer, crypto)")


def pay_currency(body: Mapping[str, Any], *, required: bool) -> str:
    return _text(body, "pay_currency", _ASSET, "the crypto asset to pay in, lower-case "
                                               "(e.g. btc, usdttrc20)", required=required)


def return_url(body: Mapping[str, Any]) -> str:
    return _text(body, "return_url", _URL, "an http(s) URL", required=False)


_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{7,127}")
# A run of this many digits looks like a card number (or a network token, which is one):
# the bridge takes vault tokens only, never card data.
_CARD_NUMBER_LIKE = re.compile(r"\d{12,}")


def payment_token(body: Mapping[str, Any]) -> str:
    """A stored card (a card vault's token): the deposit is then charged by the bridge
    itself, and may cascade to another PSP on a soft decline."""
    token = _text(body, "payment_token", _TOKEN, "a card vault's token: 8 to 128 letters, "
                                                 "digits, _ and -", required=False)
    if _CARD_NUMBER_LIKE.search(token):
        raise InvalidRequest("payment_token", "a card vault's token, never a card number "
                                              "(12 or more digits in a row)")
    return token


def destination(body: Mapping[str, Any]) -> str:
    return _text(body, "destination", _PRINTABLE, "the payout destination (account token or "
                                                  "address), printable, at most 256")
