"""Idempotency keys derived from what the caller already knows, so a game service that
restarts mid-round sends the same key again and the wallet answers with what it recorded.

    keys = RoundKeys(caller="slots-eu-1", round_id="r-8812")
    keys.bet()          # "slots-eu-1:r-8812:bet:0"
    keys.win(1)         # "slots-eu-1:r-8812:win:1", the round's second win
    keys.rollback()     # rolls back keys.bet()

A key never comes from a clock or a random number: a retry after a lost reply must reuse
it, and a new key for the same action would move the money twice. The wallet takes 1-128
printable ASCII characters; a longer derivation is shortened to a SHA-256 digest of its
parts, which is just as deterministic.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

KEY_LENGTH_MAX = 128
SEPARATOR = ":"


def _part(value: str | int, name: str) -> str:
    text = str(value)
    if not text:
        raise ValueError(f"{name} must not be empty")
    if not all(" " <= ch <= "~" for ch in text):
        raise ValueError(f"{name} must be printable ASCII")
    return text


def operation_key(caller: str, *parts: str | int) -> str:
    """`caller:part:part...`, or `caller:sha256:<hex>` of the same parts when that would be
    longer than the wallet takes. `caller` names the service instance family that owns
    the key space (keys are scoped per calling service by the wallet too)."""
    head = _part(caller.strip(), "caller")
    body = [_part(p, "key part") for p in parts]
    key = SEPARATOR.join([head, *body])
    if len(key) <= KEY_LENGTH_MAX:
        return key
    digest = hashlib.sha256("\x1f".join(body).encode()).hexdigest()
    short = f"{head}{SEPARATOR}sha256{SEPARATOR}{digest}"
    if len(short) > KEY_LENGTH_MAX:
        raise ValueError(f"caller is too long for a key of {KEY_LENGTH_MAX} characters")
    return short


@dataclass(frozen=True, slots=True)
class RoundKeys:
    """The keys of one game round's operations; `n` numbers repeated actions in the round
    (free spins, several wins)."""

    caller: str
    round_id: str

    def bet(self, n: int = 0) -> str:
        return operation_key(self.caller, self.round_id, "bet", n)

    def win(self, n: int = 0) -> str:
        return operation_key(self.caller, self.round_id, "win", n)

    def rollback(self, n: int = 0) -> str:
        return operation_key(self.caller, self.round_id, "rollback", n)
