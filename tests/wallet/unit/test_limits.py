"""The responsible-gambling rules on their own (wallet_core.domain.limits)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from wallet_core.domain.errors import InvalidField, Rejected
from wallet_core.domain.limits import (
    COOLING_OFF,
    Change,
    Guard,
    Kind,
    Period,
    period_start,
)

NOW = datetime(2026, 12, 4, 22, 30, tzinfo=UTC)  # a Friday, 23:30 in Malta
DAY_WAGER = (Kind.WAGER, Period.DAY)


def test_periods_turn_at_midnight_in_the_players_zone() -> None:
    assert period_start(Period.DAY, NOW, "UTC") == datetime(2026, 12, 4, tzinfo=UTC)
    malta = period_start(Period.DAY, NOW, "Europe/Malta")
    assert malta.isoformat() == "2026-12-04T00:00:00+01:00"
    assert period_start(Period.DAY, NOW + timedelta(hours=1), "Europe/Malta").day == 5
    assert period_start(Period.WEEK, NOW, "UTC") == datetime(2026, 11, 30, tzinfo=UTC)  # Mon
    assert period_start(Period.MONTH, NOW, "UTC") == datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(InvalidField, match="time_zone"):
        period_start(Period.DAY, NOW, "Mars/Olympus")


def test_usage_counts_up_to_the_limit_and_resets_when_the_period_turns() -> None:
    g = Guard().with_changes((Change(Kind.WAGER, Period.DAY, 100),), NOW)
    g = g.counted(Kind.WAGER, 60)
    g.refuse_over((Kind.WAGER,), 40)
    with pytest.raises(Rejected) as refused:
        g.refuse_over((Kind.WAGER,), 41)
    assert refused.value.reason == "LIMIT_EXCEEDED"
    assert refused.value.metadata == {"limit": "wager", "period": "day", "limit_minor": "100",
                                      "remaining_minor": "40"}
    tomorrow = g.at(NOW + timedelta(hours=2))
    assert tomorrow.usage[DAY_WAGER].used_minor == 0
    assert g.at(NOW + timedelta(minutes=5)).usage[DAY_WAGER].used_minor == 60


def test_lower_at_once_raise_and_remove_after_the_cooling_off() -> None:
    g = Guard().with_changes((Change(Kind.LOSS, Period.WEEK, 500),), NOW)
    assert g.limits[(Kind.LOSS, Period.WEEK)] == 500
    raised = g.with_changes((Change(Kind.LOSS, Period.WEEK, 900),), NOW)
    assert raised.limits[(Kind.LOSS, Period.WEEK)] == 500
    assert raised.pending[0].effective_at == NOW + COOLING_OFF
    assert raised.at(NOW + COOLING_OFF).limits[(Kind.LOSS, Period.WEEK)] == 900
    # A lower one asked meanwhile replaces the waiting raise and applies now.
    lowered = raised.with_changes((Change(Kind.LOSS, Period.WEEK, 300),), NOW)
    assert lowered.limits[(Kind.LOSS, Period.WEEK)] == 300 and not lowered.pending
    removed = lowered.with_changes((Change(Kind.LOSS, Period.WEEK, None),), NOW)
    assert (Kind.LOSS, Period.WEEK) in removed.limits
    assert not removed.at(NOW + COOLING_OFF).limits


def test_breaks_are_never_shortened_and_refuse_with_their_reason() -> None:
    g = Guard().with_break(timeout=timedelta(days=3), now=NOW)
    shorter = g.with_break(timeout=timedelta(days=1), now=NOW)
    assert shorter.timeout_until == NOW + timedelta(days=3)
    with pytest.raises(Rejected) as refused:
        shorter.refuse_break(NOW)
    assert refused.value.reason == "TIMED_OUT"
    shorter.at(NOW + timedelta(days=3)).refuse_break(NOW + timedelta(days=3))
    excluded = g.with_break(permanent=True, now=NOW)
    with pytest.raises(Rejected) as refused:
        excluded.refuse_break(NOW + timedelta(days=3650))
    assert (refused.value.reason, refused.value.metadata["until"]) == (
        "SELF_EXCLUDED", "permanent")
    with pytest.raises(InvalidField, match="duration_s"):
        Guard().with_break(timeout=timedelta(hours=1), now=NOW)
    with pytest.raises(InvalidField, match="duration_s"):
        Guard().with_break(exclusion=timedelta(days=30), now=NOW)


def test_a_guard_round_trips_through_its_stored_form() -> None:
    g = (Guard().with_changes((Change(Kind.DEPOSIT, Period.MONTH, 2_000_00),
                               Change(Kind.WAGER, Period.DAY, 50_00)), NOW, tz="Europe/Malta")
         .counted(Kind.DEPOSIT, 150_00)
         .with_changes((Change(Kind.WAGER, Period.DAY, 80_00),), NOW)
         .with_break(timeout=timedelta(days=2), now=NOW))
    assert Guard.from_json(g.to_json()) == g
    assert not g.empty and Guard().empty


def test_a_new_time_zone_waits_like_a_raise_once_limits_exist() -> None:
    """Periods would turn at other hours, giving a fresh period at once."""
    g = Guard().with_changes((Change(Kind.WAGER, Period.DAY, 100),), NOW).counted(
        Kind.WAGER, 100)
    moved = g.with_changes((), NOW, tz="Pacific/Kiritimati")
    assert moved.tz == "UTC" and moved.tz_pending == ("Pacific/Kiritimati", NOW + COOLING_OFF)
    with pytest.raises(Rejected):
        moved.at(NOW + timedelta(minutes=10)).refuse_over((Kind.WAGER,), 1)
    later = moved.at(NOW + COOLING_OFF)
    assert later.tz == "Pacific/Kiritimati" and later.tz_pending is None
    assert Guard.from_json(moved.to_json()) == moved
    # With no limit yet, a zone is just the zone.
    assert Guard().with_changes((), NOW, tz="Europe/Malta").tz == "Europe/Malta"


def test_a_restriction_is_stored_inherited_refused_and_ends_by_itself() -> None:
    now = datetime(2026, 12, 4, 10, tzinfo=UTC)
    ends = now + timedelta(days=30)
    g = Guard().with_restriction("UNDERAGE", ends, now)
    assert not g.empty
    stored = Guard.from_json(g.to_json())
    assert (stored.restriction, stored.restricted_until) == ("UNDERAGE", ends)
    with pytest.raises(Rejected) as refused:
        stored.at(now).refuse_break(now)
    assert (refused.value.reason, refused.value.metadata["until"]) == (
        "UNDERAGE", ends.isoformat())
    # A new wallet of the player carries it; at its end it goes by itself.
    assert Guard().with_breaks_of(stored).restriction == "UNDERAGE"
    later = stored.at(ends)
    assert later.restriction is None and later.empty
    later.refuse_break(ends)
    # Unlike a break it can be lifted early, or replaced.
    assert stored.with_restriction(None, None, now).restriction is None
    blocked = stored.with_restriction("COUNTRY_BLOCKED", None, now)
    assert (blocked.restriction, blocked.restricted_until) == ("COUNTRY_BLOCKED", None)
    assert "restriction" not in Guard().to_json(), "nothing stored for a player without one"
    with pytest.raises(InvalidField):
        Guard().with_restriction("MINOR", None, now)
