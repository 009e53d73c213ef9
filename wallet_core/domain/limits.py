"""Responsible-gambling limits and exclusions of one wallet (docs/COMPLIANCE.md): the rules,
pure, with no I/O.

A `Guard` travels with the wallet row (wallets.rg, NULL for a player who set nothing), so a
bet reads it with the lock it already takes and pays no extra round trip. It holds:

- limits per (kind, period): deposits, losses (stakes net of wins and rollbacks) and wagers
  (stakes), for the day, the week (from Monday) and the month, in the wallet's currency;
- changes waiting for their cooling-off: lowering a limit (or setting a new one) takes
  effect at once, raising or removing one only after COOLING_OFF;
- what was used in each limit's current period, reset when the period turns;
- a time-out or a self-exclusion: bets and deposits refused until it ends (never early),
  wins and rollbacks of rounds already in play still settled, withdrawals still allowed;
- a restriction the operator's compliance checks put on the player (under age, or resident
  in a blocked country): refused the same way, but lifted by the operator when its cause is
  gone, and an age restriction ends by itself on the birthday it waits for.

Periods turn at midnight in the player's time zone (UTC unless one is set).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wallet_core.domain.errors import InvalidField, Rejected

COOLING_OFF = timedelta(hours=24)
TIMEOUT_MIN = timedelta(hours=24)
TIMEOUT_MAX = timedelta(weeks=6)
SELF_EXCLUSION_MIN = timedelta(days=182)  # six months
SELF_EXCLUSION_MAX = timedelta(days=366 * 10)

SELF_EXCLUDED = "SELF_EXCLUDED"
TIMED_OUT = "TIMED_OUT"
LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
UNDERAGE = "UNDERAGE"
COUNTRY_BLOCKED = "COUNTRY_BLOCKED"
RESTRICTIONS = frozenset({UNDERAGE, COUNTRY_BLOCKED})


class Kind(StrEnum):
    DEPOSIT = "deposit"
    LOSS = "loss"
    WAGER = "wager"


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


LimitKey = tuple[Kind, Period]


def zone(name: str) -> ZoneInfo:
    """The player's time zone; InvalidField naming `time_zone` when it is not one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidField("time_zone", "an IANA time zone such as Europe/Malta") from None


def period_start(period: Period, now: datetime, tz: str) -> datetime:
    """When the period holding `now` began, in the player's zone (an aware datetime)."""
    local = now.astimezone(zone(tz))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.WEEK:
        midnight -= timedelta(days=midnight.weekday())
    elif period is Period.MONTH:
        midnight = midnight.replace(day=1)
    return midnight


def period_end(period: Period, start: datetime) -> datetime:
    """The start of the next period (wall-clock arithmetic in the player's zone, so a day
    with a daylight-saving change is 23 or 25 hours long)."""
    if period is Period.DAY:
        return start + timedelta(days=1)
    if period is Period.WEEK:
        return start + timedelta(days=7)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.replace(year=year, month=month)


class Usage(NamedTuple):
    """What was used of one limit in the period [since_s, until_s) (epoch seconds: every
    bet of a limited player reads and writes these, and ints are what is cheap)."""

    since_s: int
    until_s: int
    used_minor: int = 0

    @classmethod
    def fresh(cls, period: Period, now: datetime, tz: str) -> Usage:
        start = period_start(period, now, tz)
        return cls(int(start.timestamp()), int(period_end(period, start).timestamp()))

    def holds(self, now_s: float) -> bool:
        return self.since_s <= now_s < self.until_s


@dataclass(frozen=True, slots=True)
class Pending:
    """A raise or removal (`amount_minor` None) waiting for its cooling-off."""

    kind: Kind
    period: Period
    amount_minor: int | None
    effective_at: datetime


@dataclass(frozen=True, slots=True)
class Change:
    """A change asked for: a new amount, or None to remove the limit."""

    kind: Kind
    period: Period
    amount_minor: int | None


@dataclass(frozen=True, slots=True)
class Guard:
    limits: Mapping[LimitKey, int] = field(default_factory=dict)
    pending: tuple[Pending, ...] = ()
    usage: Mapping[LimitKey, Usage] = field(default_factory=dict)
    timeout_until: datetime | None = None
    excluded_until: datetime | None = None
    excluded_permanently: bool = False
    tz: str = "UTC"
    # A new time zone waiting for its cooling-off (a zone change moves when periods turn,
    # so it could give a fresh period at once, as a raise would).
    tz_pending: tuple[str, datetime] | None = None
    # The operator's restriction (UNDERAGE, COUNTRY_BLOCKED) and when it ends by itself
    # (None: when lifted).
    restriction: str | None = None
    restricted_until: datetime | None = None

    @property
    def empty(self) -> bool:
        """Nothing set: the wallet row keeps NULL and its bets pay for nothing."""
        return not (self.limits or self.pending or self.timeout_until or self.excluded_until
                    or self.excluded_permanently or self.tz != "UTC" or self.tz_pending
                    or self.restriction)

    # -- time --------------------------------------------------------------------------------

    def at(self, now: datetime) -> Guard:
        """The guard as of `now`: due changes applied, ended breaks dropped, usage of
        turned periods reset."""
        if self.tz_pending is not None and self.tz_pending[1] <= now:
            return replace(self, tz=self.tz_pending[0], tz_pending=None,
                           usage={}).at(now)
        limits = self.limits
        waiting = self.pending
        if any(p.effective_at <= now for p in self.pending):
            limits = dict(limits)
            waiting = ()
            for p in self.pending:
                if p.effective_at > now:
                    waiting = (*waiting, p)
                elif p.amount_minor is None:
                    limits.pop((p.kind, p.period), None)
                else:
                    limits[(p.kind, p.period)] = p.amount_minor
        usage = self.usage
        now_s = now.timestamp()
        current = all(key in usage and usage[key].holds(now_s)
                      for key in limits) and len(usage) == len(limits)
        if not current:  # a period turned (or a limit came or went): the zone's arithmetic
            usage = {}
            for key in limits:
                found = self.usage.get(key)
                usage[key] = (found if found is not None and found.holds(now_s)
                              else Usage.fresh(key[1], now, self.tz))
        if (limits is self.limits and usage is self.usage and self.timeout_until is None
                and self.excluded_until is None and self.restricted_until is None):
            return self  # the common case: nothing due, nothing turned
        restriction_ended = (self.restricted_until is not None
                             and self.restricted_until <= now)
        return replace(
            self, limits=limits, pending=tuple(waiting), usage=usage,
            timeout_until=(self.timeout_until if self.timeout_until
                           and self.timeout_until > now else None),
            excluded_until=(self.excluded_until if self.excluded_until
                            and self.excluded_until > now else None),
            restriction=None if restriction_ended else self.restriction,
            restricted_until=None if restriction_ended else self.restricted_until)

    # -- what may happen ---------------------------------------------------------------------

    def refuse_break(self, now: datetime) -> None:
        """Rejected (SELF_EXCLUDED / TIMED_OUT) while the player is on a break, and with the
        restriction's reason (UNDERAGE / COUNTRY_BLOCKED) while one holds."""
        if self.restriction is not None and (self.restricted_until is None
                                             or self.restricted_until > now):
            until = ("until lifted" if self.restricted_until is None
                     else f"until {self.restricted_until.isoformat()}")
            why = ("is under the minimum age" if self.restriction == UNDERAGE
                   else "lives in a country the casino may not serve")
            raise Rejected(f"the player {why}: play is restricted {until}",
                           reason=self.restriction,
                           metadata={"until": "lifted" if self.restricted_until is None
                                     else self.restricted_until.isoformat()})
        if self.excluded_permanently or (self.excluded_until and self.excluded_until > now):
            until = ("permanently" if self.excluded_permanently
                     else f"until {self.excluded_until.isoformat()}" if self.excluded_until
                     else "")
            raise Rejected(f"the player is self-excluded {until}", reason=SELF_EXCLUDED,
                           metadata={"until": "permanent" if self.excluded_permanently
                                     else str(self.excluded_until and
                                              self.excluded_until.isoformat())})
        if self.timeout_until and self.timeout_until > now:
            raise Rejected(f"the player is taking a time-out until "
                           f"{self.timeout_until.isoformat()}", reason=TIMED_OUT,
                           metadata={"until": self.timeout_until.isoformat()})

    def refuse_over(self, kinds: tuple[Kind, ...], amount_minor: int) -> None:
        """Rejected (LIMIT_EXCEEDED) when `amount_minor` more of any of `kinds` would cross
        a limit; the metadata names the tightest one and what remains of it."""
        for kind in kinds:
            for period in Period:
                limit = self.limits.get((kind, period))
                if limit is None:
                    continue
                found = self.usage.get((kind, period))
                used = 0 if found is None else found.used_minor
                if used + amount_minor > limit:
                    remaining = max(0, limit - used)
                    raise Rejected(
                        f"{kind} limit of {limit} per {period} reached: {remaining} remain",
                        reason=LIMIT_EXCEEDED,
                        metadata={"limit": kind.value, "period": period.value,
                                  "limit_minor": str(limit), "remaining_minor": str(remaining)})

    # -- what happened -----------------------------------------------------------------------

    def counted(self, kind: Kind, amount_minor: int, *also: Kind) -> Guard:
        """`amount_minor` more of `kind` (and of `also`; negative for wins and rollbacks) in
        every period with a limit. Loss usage may go below zero: winnings make room."""
        kinds = (kind, *also)
        usage = dict(self.usage)
        for key, u in self.usage.items():
            if key[0] in kinds:
                usage[key] = Usage(u.since_s, u.until_s, u.used_minor + amount_minor)
        return replace(self, usage=usage)

    # -- what the player asks for ------------------------------------------------------------

    def with_changes(self, changes: tuple[Change, ...], now: datetime, *,
                     tz: str | None = None) -> Guard:
        """Lowering a limit (or setting a new one) applies at once; raising or removing one
        waits COOLING_OFF, replacing a change already waiting for the same limit."""
        g = self.at(now)
        limits = dict(g.limits)
        pending = [p for p in g.pending
                   if (p.kind, p.period) not in {(c.kind, c.period) for c in changes}]
        for c in changes:
            current = limits.get((c.kind, c.period))
            tighter = c.amount_minor is not None and (current is None
                                                      or c.amount_minor <= current)
            if tighter:
                assert c.amount_minor is not None
                limits[(c.kind, c.period)] = c.amount_minor
            else:
                pending.append(Pending(c.kind, c.period, c.amount_minor, now + COOLING_OFF))
        new_tz, tz_pending = g.tz, g.tz_pending
        if tz is not None and tz != g.tz:
            zone(tz)
            if g.limits:
                # Periods would turn at other hours: as loose as a raise, so it waits.
                tz_pending = (tz, now + COOLING_OFF)
            else:
                new_tz, tz_pending = tz, None
        return replace(g, limits=limits, pending=tuple(pending), tz=new_tz,
                       tz_pending=tz_pending).at(now)

    def with_break(self, *, timeout: timedelta | None = None,
                   exclusion: timedelta | None = None, permanent: bool = False,
                   now: datetime) -> Guard:
        """A time-out or a self-exclusion starting now. A break is never shortened: the
        later end wins."""
        g = self.at(now)
        if permanent:
            return replace(g, excluded_permanently=True)
        if timeout is not None:
            if not TIMEOUT_MIN <= timeout <= TIMEOUT_MAX:
                raise InvalidField("duration_s", "a time-out lasts 24 hours to 6 weeks")
            end = now + timeout
            return replace(g, timeout_until=max(end, g.timeout_until or end))
        assert exclusion is not None
        if not SELF_EXCLUSION_MIN <= exclusion <= SELF_EXCLUSION_MAX:
            raise InvalidField("duration_s", "a self-exclusion lasts 6 months to 10 years, "
                                             "or is permanent")
        end = now + exclusion
        return replace(g, excluded_until=max(end, g.excluded_until or end))

    def with_restriction(self, reason: str | None, until: datetime | None,
                         now: datetime) -> Guard:
        """The operator's restriction set, replaced, or lifted (`reason` None). Unlike a
        break it may end early: its cause (an age, a country) can be shown wrong or gone."""
        g = self.at(now)
        if reason is None:
            return replace(g, restriction=None, restricted_until=None)
        if reason not in RESTRICTIONS:
            raise InvalidField("reason", "UNDERAGE or COUNTRY_BLOCKED")
        if until is not None and until <= now:
            raise InvalidField("until", "must be in the future (or unset: until lifted)")
        return replace(g, restriction=reason, restricted_until=until)

    def with_breaks_of(self, other: Guard) -> Guard:
        """This wallet with the breaks of another wallet of the player (a wallet opened
        during a break inherits it): the later ends win. A restriction is the player's as
        well; every wallet carries the same one, so the one found is taken."""
        def later(a: datetime | None, b: datetime | None) -> datetime | None:
            return b if a is None else a if b is None else max(a, b)
        return replace(self, timeout_until=later(self.timeout_until, other.timeout_until),
                       excluded_until=later(self.excluded_until, other.excluded_until),
                       excluded_permanently=(self.excluded_permanently
                                             or other.excluded_permanently),
                       restriction=self.restriction or other.restriction,
                       restricted_until=(self.restricted_until if self.restriction
                                         else other.restricted_until))

    # -- storage -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The stored form (wallets.rg). Times are epoch seconds: a limited player's every
        bet reads and writes it, and ints cost a fraction of ISO strings."""
        return {
            "limits": [[k.value, p.value, amount] for (k, p), amount in self.limits.items()],
            "pending": [[p.kind.value, p.period.value, p.amount_minor, _epoch(p.effective_at)]
                        for p in self.pending],
            "usage": [[k.value, p.value, *u] for (k, p), u in self.usage.items()],
            "timeout_until": _epoch(self.timeout_until) if self.timeout_until else None,
            "excluded_until": _epoch(self.excluded_until) if self.excluded_until else None,
            "excluded_permanently": self.excluded_permanently, "tz": self.tz,
            "tz_pending": (None if self.tz_pending is None
                           else [self.tz_pending[0], _epoch(self.tz_pending[1])]),
            **({} if self.restriction is None else {
                "restriction": self.restriction,
                "restricted_until": (_epoch(self.restricted_until)
                                     if self.restricted_until else None)})}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Guard:
        def when(value: Any) -> datetime | None:
            return None if value is None else _time(value)
        return cls(
            limits={(_KINDS[k], _PERIODS[p]): int(a) for k, p, a in d.get("limits", ())},
            pending=tuple(Pending(_KINDS[k], _PERIODS[p], None if a is None else int(a),
                                  _time(at))
                          for k, p, a, at in d.get("pending", ())),
            usage={(_KINDS[k], _PERIODS[p]): Usage(since, until, used)
                   for k, p, since, until, used in d.get("usage", ())},
            timeout_until=when(d.get("timeout_until")),
            excluded_until=when(d.get("excluded_until")),
            excluded_permanently=bool(d.get("excluded_permanently", False)),
            tz=str(d.get("tz", "UTC")),
            tz_pending=(None if not d.get("tz_pending")
                        else (str(d["tz_pending"][0]), _time(d["tz_pending"][1]))),
            restriction=d.get("restriction"),
            restricted_until=when(d.get("restricted_until")))


_KINDS = {k.value: k for k in Kind}
_PERIODS = {p.value: p for p in Period}


def _epoch(when: datetime) -> int:
    return int(when.timestamp())


def _time(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(int(epoch_s), UTC)
