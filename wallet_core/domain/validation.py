"""Request field validation: every check names the field it refuses.

Identifiers are printable ASCII without spaces at the edges; they end up in logs, journal
details and Redis keys, so control characters and unbounded lengths are refused up front.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from wallet_core.domain import errors
from wallet_core.domain.errors import InvalidField
from wallet_core.domain.money import Currency

IDEMPOTENCY_KEY_LENGTH_MAX = 128
ID_LENGTH_MAX = 64
REASON_LENGTH_MAX = 256
_PRINTABLE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@\-]*")
_NUMERIC_ID = re.compile(r"[1-9][0-9]{0,18}")


def _required(field: str, value: str) -> str:
    if not value:
        raise InvalidField(field, "is required", reason=errors.FIELD_REQUIRED)
    return value


def idempotency_key(value: str, field: str = "idempotency_key") -> str:
    _required(field, value)
    if len(value) > IDEMPOTENCY_KEY_LENGTH_MAX:
        raise InvalidField(field, f"must be at most {IDEMPOTENCY_KEY_LENGTH_MAX} characters")
    if not _PRINTABLE.fullmatch(value):
        raise InvalidField(field, "must be printable ASCII without leading or trailing spaces")
    return value


def identifier(value: str, field: str) -> str:
    """player_id, game_id, round_id, psp, psp_reference: letters, digits and _.:@-."""
    _required(field, value)
    if len(value) > ID_LENGTH_MAX:
        raise InvalidField(field, f"must be at most {ID_LENGTH_MAX} characters")
    if not _IDENTIFIER.fullmatch(value):
        raise InvalidField(field, "may hold only letters, digits and _ . : @ - "
                                  "and must start with a letter or digit")
    return value


def numeric_id(value: str, field: str) -> int:
    _required(field, value)
    if not _NUMERIC_ID.fullmatch(value) or int(value) > 2**63 - 1:
        raise InvalidField(field, "must be a transaction/withdrawal/bonus id as returned by the wallet")
    return int(value)


def free_text(value: str, field: str, *, required: bool) -> str:
    if required:
        _required(field, value)
    if len(value) > REASON_LENGTH_MAX:
        raise InvalidField(field, f"must be at most {REASON_LENGTH_MAX} characters")
    if any(not ch.isprintable() for ch in value):
        raise InvalidField(field, "must not contain control characters")
    return value


def currency(value: str, known: Mapping[str, Currency], field: str = "currency") -> Currency:
    _required(field, value)
    found = known.get(value)
    if found is None:
        shown = value if len(value) <= 8 and value.isalnum() else "that value"
        raise InvalidField(field, f"{shown} is not a supported currency",
                           reason=errors.UNKNOWN_CURRENCY)
    return found


def positive_amount(value: int, cur: Currency, field: str = "amount") -> int:
    if value <= 0:
        raise InvalidField(field, "must be a positive number of minor units",
                           reason=errors.AMOUNT_NOT_POSITIVE)
    _at_most(value, cur, field)
    return value


def signed_amount(value: int, cur: Currency, field: str = "amount") -> int:
    if value == 0:
        raise InvalidField(field, "must not be zero", reason=errors.AMOUNT_NOT_POSITIVE)
    _at_most(abs(value), cur, field)
    return value


def non_negative_amount(value: int, cur: Currency, field: str) -> int:
    if value < 0:
        raise InvalidField(field, "must not be negative")
    if value > 0:
        _at_most(value, cur, field)
    return value


def _at_most(value: int, cur: Currency, field: str) -> None:
    if value > cur.amount_max_minor:
        raise InvalidField(field, f"must be at most {cur.amount_max_minor} minor units of {cur.code}",
                           reason=errors.AMOUNT_ABOVE_MAXIMUM)
