"""A player's identity verification (KYC) and the gates it opens (docs/COMPLIANCE.md): the
rules, pure, with no I/O.

    unverified ──start──▶ pending ──clear──▶ verified ──documents out of date──▶ expired
                            │  ▲                 │                                │
                            │  └────re-check─────┴────────────re-check────────────┘
                            └──consider──▶ rejected ──re-check──▶ pending

A provider's answer only moves a check that is still the player's current one: an answer
for an older check (a re-check started since) or one that comes twice changes nothing.

A verification that shows the player under age, or resident in a blocked country, also
calls for a restriction in the wallet (bets are the wallet's, not the cashier's): its
encoded form (`restriction`) is kept on the player's row and sent to the wallet until the
wallet has it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from enum import StrEnum


class KycState(StrEnum):
    UNVERIFIED = "unverified"
    PENDING = "pending"
    VERIFIED = "verified"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True, kw_only=True)
class Verification:
    player_id: str
    state: KycState = KycState.UNVERIFIED
    provider: str = ""
    applicant_id: str = ""
    check_id: str = ""  # the current check: only its answer counts
    checks_started: int = 0
    birth_date: date | None = None  # as the provider confirmed it
    country: str = ""  # of residence, as the provider confirmed it (ISO 3166-1 alpha-2)
    documents_expire_on: date | None = None
    # Support reviewed a rejected player and let their own cash leave.
    cash_out_allowed: bool = False
    # Rejected before: deposits stay refused while a re-check runs.
    was_rejected: bool = False
    # What the wallet should enforce: "" (nothing), "COUNTRY_BLOCKED" or
    # "UNDERAGE:<the date the player comes of age>" (encode_restriction).
    restriction: str = ""
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """A provider's answer about one check."""

    check_id: str
    clear: bool  # Onfido: result "clear"; "consider" is a rejection
    birth_date: date | None = None
    country: str = ""
    documents_expire_on: date | None = None


def started(v: Verification, *, provider: str, applicant_id: str, check_id: str,
            now: datetime) -> Verification:
    """A check started (the first, or a re-check after a rejection or expiry): pending
    until the provider answers; the check before it no longer counts."""
    return replace(v, state=KycState.PENDING, provider=provider, applicant_id=applicant_id,
                   check_id=check_id, checks_started=v.checks_started + 1, updated_at=now)


class KycRefused(ValueError):
    """A support decision the lifecycle does not allow; `code` is its stable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def cash_out_allowed(v: Verification, *, now: datetime) -> Verification:
    """Support's decision after reviewing a rejected player: their own cash may leave
    (deposits stay refused). Only for a rejected player."""
    if v.state is not KycState.REJECTED:
        raise KycRefused("KYC_NOT_REJECTED", f"only a rejected player's cash-out is decided "
                                             f"by support; the player is {v.state.value}")
    return replace(v, cash_out_allowed=True, updated_at=now)


def answered(v: Verification, result: CheckResult, *, now: datetime) -> Verification | None:
    """The verification after the provider's answer; None when the answer changes nothing
    (not the current check, or the check already answered)."""
    if result.check_id != v.check_id or v.state is not KycState.PENDING:
        return None
    if not result.clear:
        return replace(v, state=KycState.REJECTED, was_rejected=True, updated_at=now)
    return replace(v, state=KycState.VERIFIED, birth_date=result.birth_date,
                   country=result.country, documents_expire_on=result.documents_expire_on,
                   was_rejected=False, updated_at=now)


def current(v: Verification, today: date) -> Verification:
    """A verification whose documents ran out is `expired` (re-check needed)."""
    if v.state is KycState.VERIFIED and v.documents_expire_on is not None \
            and v.documents_expire_on < today:
        return replace(v, state=KycState.EXPIRED)
    return v


# -- gates ----------------------------------------------------------------------------------

KYC_REQUIRED = "KYC_REQUIRED"
KYC_REJECTED = "KYC_REJECTED"
UNDERAGE = "UNDERAGE"
COUNTRY_BLOCKED = "COUNTRY_BLOCKED"


@dataclass(frozen=True, slots=True)
class Gate:
    """Why a payment may not go ahead (None from the checks when it may)."""

    code: str
    message: str


def age_on(birth_date: date, today: date) -> int:
    before_birthday = (today.month, today.day) < (birth_date.month, birth_date.day)
    return today.year - birth_date.year - before_birthday


def withdrawal_gate(v: Verification) -> Gate | None:
    if v.state is KycState.VERIFIED:
        return None
    if v.was_rejected and v.cash_out_allowed:
        return None  # support's reviewed decision: their own cash may leave
    return Gate(KYC_REQUIRED, f"withdrawals need a verified identity; the player is "
                              f"{v.state.value}")


def deposit_gate(v: Verification, *, deposited_minor: int, amount_minor: int,
                 threshold_minor: int, today: date, min_age_by_country: Mapping[str, int],
                 min_age_default: int, blocked_countries: Collection[str]) -> Gate | None:
    """Deposits past `threshold_minor` in all (what was deposited plus this one, in the
    threshold's currency) need a verified player, and a rejected player may not deposit; a
    verified player under the minimum age of their country, or resident in a blocked
    country, may not deposit at all."""
    if v.state is KycState.VERIFIED:
        if v.birth_date is None or not v.country:
            # Fail closed: a verification that did not establish both is not enough.
            return Gate(KYC_REQUIRED, "the verification did not confirm the player's date "
                                      "of birth and country; a re-check is needed")
        if v.country in blocked_countries:
            return Gate(COUNTRY_BLOCKED, f"players from {v.country} may not play here")
        minimum = min_age_by_country.get(v.country, min_age_default)
        if age_on(v.birth_date, today) < minimum:
            return Gate(UNDERAGE, f"the minimum age in {v.country} is {minimum}")
        return None
    if v.state is KycState.REJECTED or v.was_rejected:
        return Gate(KYC_REJECTED, "the player's identity check was rejected; deposits are "
                                  "refused")
    if deposited_minor + amount_minor > threshold_minor:
        return Gate(KYC_REQUIRED, f"deposits past {threshold_minor} minor units in all need a "
                                  f"verified identity; the player is {v.state.value}")
    return None


# -- the wallet's restriction ---------------------------------------------------------------

def comes_of_age_on(birth_date: date, age: int) -> date:
    """The birthday on which a player reaches `age` (29 February: 1 March in other years)."""
    try:
        return birth_date.replace(year=birth_date.year + age)
    except ValueError:
        return date(birth_date.year + age, 3, 1)


def play_restriction(v: Verification, *, today: date, min_age_by_country: Mapping[str, int],
                     min_age_default: int, blocked_countries: Collection[str]) -> str:
    """The restriction a verification calls for in the wallet (encoded); a verification
    without a clear answer keeps the one before (an expiry or a rejection does not show the
    player older, or living elsewhere)."""
    if v.state is not KycState.VERIFIED or v.birth_date is None or not v.country:
        return v.restriction
    if v.country in blocked_countries:
        return COUNTRY_BLOCKED
    minimum = min_age_by_country.get(v.country, min_age_default)
    if age_on(v.birth_date, today) < minimum:
        return f"{UNDERAGE}:{comes_of_age_on(v.birth_date, minimum).isoformat()}"
    return ""


# An age restriction ends at noon UTC on the birthday: by then the day has begun in every
# time zone, so no player is let in before their birthday where they live.
COMES_OF_AGE_AT = time(12, 0, tzinfo=UTC)


def decode_restriction(encoded: str, now: datetime) -> tuple[str, datetime | None] | None:
    """(reason, when it ends by itself or None) for the wallet; None: nothing to enforce (no
    restriction, or an age restriction whose end has come)."""
    if not encoded:
        return None
    reason, _, until = encoded.partition(":")
    if not until:
        return reason, None
    ends_at = datetime.combine(date.fromisoformat(until), COMES_OF_AGE_AT)
    return None if ends_at <= now else (reason, ends_at)
