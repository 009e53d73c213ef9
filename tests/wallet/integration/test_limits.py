"""Responsible-gambling limits and breaks through real gRPC and Postgres (docs/COMPLIANCE.md):
limits hold under concurrency, raising one waits out its cooling-off, a break refuses bets
and deposits but lets rounds in play settle and cash leave, and every refusal says why and
moves nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from wallet.v1 import wallet_service_pb2 as pb

from tests.helpers import Client, error_info, key
from wallet_core import config
from wallet_core.server import running


def change(kind: pb.LimitKind, period: pb.LimitPeriod, amount: int = 0, *,
           remove: bool = False) -> pb.LimitChange:
    return pb.LimitChange(kind=kind, period=period, amount=amount, remove=remove)


async def set_limits(client: Client, player: str, *changes: pb.LimitChange,
                     time_zone: str = "") -> pb.SetLimitsResponse:
    answer: pb.SetLimitsResponse = await client.call("SetLimits", pb.SetLimitsRequest(
        player_id=player, currency="USD", changes=list(changes), time_zone=time_zone,
        idempotency_key=key("lim")), "limits")
    return answer


async def limits(client: Client, player: str) -> pb.Limits:
    answer: pb.GetLimitsResponse = await client.call("GetLimits", pb.GetLimitsRequest(
        player_id=player, currency="USD"), "read")
    return answer.limits


async def exclude(client: Client, player: str, kind: pb.BreakKind, duration_s: int = 0, *,
                  permanent: bool = False) -> pb.ExcludeResponse:
    answer: pb.ExcludeResponse = await client.call("Exclude", pb.ExcludeRequest(
        player_id=player, currency="USD", kind=kind, duration_s=duration_s,
        permanent=permanent, idempotency_key=key("excl")), "limits")
    return answer


async def restrict(client: Client, player: str, reason: str = "", *,
                   until: datetime | None = None, lift: bool = False,
                   currency: str = "USD") -> pb.RestrictResponse:
    request = pb.RestrictRequest(player_id=player, currency=currency, reason=reason, lift=lift,
                                 idempotency_key=key("restrict"))
    if until is not None:
        request.until.FromDatetime(until)
    answer: pb.RestrictResponse = await client.call("Restrict", request, "compliance")
    return answer


def past() -> Any:
    ts = pb.RestrictRequest().until
    ts.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    return ts


def restrict_as(client: Client, player: str, scope: str) -> Any:
    return client.call("Restrict", pb.RestrictRequest(
        player_id=player, currency="USD", reason="UNDERAGE", idempotency_key=key("scope")),
        scope)


async def refusal(call: Any) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    info = error_info(caught.value)
    return caught.value.code(), info.reason, dict(info.metadata)


async def test_concurrent_bets_never_cross_a_wager_limit(client: Client, player: str,
                                                         ledger_clean: None) -> None:
    await client.funded(player, 100_00)
    await set_limits(client, player, change(pb.LIMIT_KIND_WAGER, pb.LIMIT_PERIOD_DAY, 10_00))
    results = await asyncio.gather(*(client.bet(player, 10, round_id=f"r{i}")
                                     for i in range(200)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 100 and len(refused) == 100, (len(ok), len(refused))
    assert {error_info(r).reason for r in refused} == {"LIMIT_EXCEEDED"}
    assert (await client.balance(player)).cash == 100_00 - 10_00
    [day] = (await limits(client, player)).limits
    assert (day.amount, day.used, day.remaining) == (10_00, 10_00, 0)


async def test_concurrent_deposits_never_cross_a_deposit_limit(client: Client, player: str,
                                                               ledger_clean: None) -> None:
    await client.open(player)
    await set_limits(client, player, change(pb.LIMIT_KIND_DEPOSIT, pb.LIMIT_PERIOD_WEEK, 5_00))
    results = await asyncio.gather(*(client.deposit(player, 10) for _ in range(200)),
                                   return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert len(ok) == 50, len(ok)
    assert (await client.balance(player)).cash == 5_00
    code, reason, meta = await refusal(client.deposit(player, 1))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LIMIT_EXCEEDED")
    assert {k: meta[k] for k in ("limit", "period", "limit_minor", "remaining_minor")} == {
        "limit": "deposit", "period": "week", "limit_minor": "500", "remaining_minor": "0"}


async def test_a_loss_limit_counts_wins_and_rollbacks(client: Client, player: str,
                                                      ledger_clean: None) -> None:
    await client.funded(player, 100_00)
    await set_limits(client, player, change(pb.LIMIT_KIND_LOSS, pb.LIMIT_PERIOD_MONTH, 30_00))
    await client.bet(player, 20_00, round_id="a")
    await client.win(player, 5_00, round_id="a")  # net loss 15
    rolled = key("bet")
    await client.bet(player, 10_00, idem=rolled, round_id="b")  # 25
    await client.rollback(player, rolled)  # 15: money back, like a win
    await client.bet(player, 15_00, round_id="c")  # 30: at the limit
    code, reason, meta = await refusal(client.bet(player, 1, round_id="d"))
    assert (reason, meta["limit"], meta["period"], meta["remaining_minor"]) == (
        "LIMIT_EXCEEDED", "loss", "month", "0")
    [month] = (await limits(client, player)).limits
    assert month.used == 30_00


async def test_lowering_is_at_once_and_raising_waits_24_hours(settings: config.Settings,
                                                              player: str) -> None:
    now = [datetime(2026, 12, 4, 10, 0, tzinfo=UTC)]
    async with running(settings, clock=lambda: now[0]) as run, \
            grpc.aio.insecure_channel(f"127.0.0.1:{run.port}") as channel:
        c = Client(channel)
        await c.funded(player, 100_00)
        await set_limits(c, player, change(pb.LIMIT_KIND_WAGER, pb.LIMIT_PERIOD_DAY, 10_00))
        raised = await set_limits(c, player,
                                  change(pb.LIMIT_KIND_WAGER, pb.LIMIT_PERIOD_DAY, 50_00))
        [day] = raised.limits.limits
        [waiting] = raised.limits.pending
        assert day.amount == 10_00, "a raise waits"
        assert (waiting.amount, waiting.effective_at.ToDatetime(tzinfo=UTC)) == (
            50_00, now[0] + timedelta(hours=24))
        await c.bet(player, 10_00, round_id="r1")
        assert (await refusal(c.bet(player, 1, round_id="r2")))[1] == "LIMIT_EXCEEDED"
        now[0] += timedelta(hours=23, minutes=59)
        # Still the same day in UTC? No: 09:59 the next day. The period turned, the raise
        # did not: the old limit, fresh usage.
        [day] = (await limits(c, player)).limits
        assert (day.amount, day.used) == (10_00, 0)
        now[0] += timedelta(minutes=1)
        [day] = (await limits(c, player)).limits
        assert day.amount == 50_00 and not (await limits(c, player)).pending
        await c.bet(player, 30_00, round_id="r3")
        # Lowering again applies at once; removing waits.
        lowered = await set_limits(c, player,
                                   change(pb.LIMIT_KIND_WAGER, pb.LIMIT_PERIOD_DAY, 20_00))
        assert lowered.limits.limits[0].amount == 20_00
        assert (await refusal(c.bet(player, 1, round_id="r4")))[1] == "LIMIT_EXCEEDED"
        removed = await set_limits(c, player, change(pb.LIMIT_KIND_WAGER, pb.LIMIT_PERIOD_DAY,
                                                     remove=True))
        assert removed.limits.limits[0].amount == 20_00 and removed.limits.pending[0].remove


async def test_a_break_refuses_bets_and_deposits_but_settles_rounds_and_pays_out(
        client: Client, player: str, ledger_clean: None) -> None:
    await client.funded(player, 100_00)
    in_play = key("bet")
    await client.bet(player, 10_00, idem=in_play, round_id="open")
    await client.bet(player, 5_00, round_id="open2")
    await client.open(player, "EUR")
    answered = await exclude(client, player, pb.BREAK_KIND_TIMEOUT, 48 * 3600)
    assert answered.limits.timeout_until.ToDatetime(tzinfo=UTC) > datetime.now(UTC)
    balance_before = await client.balance(player)
    code, reason, meta = await refusal(client.bet(player, 1_00, round_id="new"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TIMED_OUT")
    assert "until" in meta
    assert (await refusal(client.deposit(player, 1_00)))[1] == "TIMED_OUT"
    # The EUR wallet is under the break too.
    assert (await refusal(client.deposit(player, 1_00, "EUR")))[1] == "TIMED_OUT"
    assert await client.balance(player) == balance_before, "refusals move nothing"
    await client.win(player, 30_00, round_id="open")
    await client.rollback(player, in_play)
    assert (await refusal(client.grant(player, 5_00, 10_00)))[1] == "TIMED_OUT", \
        "no incentives during a break"
    reserved = await client.call("ReserveWithdrawal", pb.ReserveWithdrawalRequest(
        player_id=player, currency="USD", amount=20_00, psp="stripe",
        idempotency_key=key("wd")), "payments")
    assert reserved.withdrawal_id
    # A self-exclusion on top; neither can be shortened, and it is the player's (a wallet
    # opened now inherits it).
    await exclude(client, player, pb.BREAK_KIND_SELF_EXCLUSION, permanent=True)
    await client.open(player, "GBP")
    assert (await refusal(client.deposit(player, 1_00, "GBP")))[1] == "SELF_EXCLUDED"
    shorter = await exclude(client, player, pb.BREAK_KIND_TIMEOUT, 24 * 3600)
    assert shorter.limits.excluded_permanently
    assert shorter.limits.timeout_until == answered.limits.timeout_until


async def test_a_restriction_refuses_play_until_lifted_and_settles_rounds(
        client: Client, player: str, ledger_clean: None) -> None:
    await client.funded(player, 100_00)
    in_play = key("bet")
    await client.bet(player, 10_00, idem=in_play, round_id="open")
    await client.bet(player, 5_00, round_id="open2")
    await client.open(player, "EUR")
    answered = await restrict(client, player, "COUNTRY_BLOCKED")
    assert (answered.limits.restriction, answered.limits.HasField("restricted_until")) == (
        "COUNTRY_BLOCKED", False)
    before = await client.balance(player)
    code, reason, meta = await refusal(client.bet(player, 1_00, round_id="new"))
    assert (code, reason, meta["until"]) == (grpc.StatusCode.FAILED_PRECONDITION,
                                             "COUNTRY_BLOCKED", "lifted")
    assert (await refusal(client.deposit(player, 1_00, "EUR")))[1] == "COUNTRY_BLOCKED"
    assert (await refusal(client.grant(player, 5_00, 10_00)))[1] == "COUNTRY_BLOCKED"
    assert await client.balance(player) == before, "refusals move nothing"
    await client.win(player, 30_00, round_id="open")
    await client.rollback(player, in_play)
    reserved = await client.call("ReserveWithdrawal", pb.ReserveWithdrawalRequest(
        player_id=player, currency="USD", amount=20_00, psp="stripe",
        idempotency_key=key("wd")), "payments")
    assert reserved.withdrawal_id, "the player's own cash may still leave"
    # A wallet opened now is under it too; an age restriction replaces it and ends on its own.
    await client.open(player, "GBP")
    assert (await refusal(client.deposit(player, 1_00, "GBP")))[1] == "COUNTRY_BLOCKED"
    birthday = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    aged = await restrict(client, player, "UNDERAGE", until=birthday)
    assert aged.limits.restricted_until.ToDatetime(tzinfo=UTC) == birthday
    code, reason, meta = await refusal(client.bet(player, 1_00, round_id="new"))
    assert (reason, meta["until"]) == ("UNDERAGE", birthday.isoformat())
    lifted = await restrict(client, player, lift=True, currency="GBP")
    assert not lifted.limits.restriction
    await client.bet(player, 1_00, round_id="after")
    await client.deposit(player, 1_00, "EUR")


async def test_an_age_restriction_ends_on_its_birthday(settings: config.Settings,
                                                      player: str) -> None:
    now = [datetime.now(UTC)]
    async with running(settings, clock=lambda: now[0]) as run, \
            grpc.aio.insecure_channel(f"127.0.0.1:{run.port}") as channel:
        c = Client(channel)
        await c.funded(player, 10_00)
        await restrict(c, player, "UNDERAGE", until=now[0] + timedelta(days=2))
        assert (await refusal(c.bet(player, 1_00, round_id="r1")))[1] == "UNDERAGE"
        now[0] += timedelta(days=2, seconds=1)
        await c.bet(player, 1_00, round_id="r2")
        assert not (await limits(c, player)).restriction


@pytest.mark.parametrize(("request_fields", "field"), [
    ({"reason": "MINOR"}, "reason"),
    ({"reason": "UNDERAGE", "lift": True}, "reason"),
    ({"reason": "UNDERAGE", "until": past()}, "until"),
])
async def test_bad_restrictions_name_the_field_and_change_nothing(
        client: Client, player: str, request_fields: dict[str, Any], field: str) -> None:
    await client.open(player)
    code, _, meta = await refusal(client.call("Restrict", pb.RestrictRequest(
        player_id=player, currency="USD", idempotency_key=key("bad"), **request_fields),
        "compliance"))
    assert (code, meta.get("field")) == (grpc.StatusCode.INVALID_ARGUMENT, field), meta
    assert not (await limits(client, player)).restriction
    code, _, _ = await refusal(restrict_as(client, player, "limits"))
    assert code == grpc.StatusCode.PERMISSION_DENIED, "restrictions are the operator's"


@pytest.mark.parametrize(("request_fields", "field"), [
    ({"changes": []}, "changes"),
    ({"changes": [pb.LimitChange(kind=pb.LIMIT_KIND_LOSS, period=pb.LIMIT_PERIOD_DAY,
                                 amount=-5)]}, "changes[0].amount"),
    ({"changes": [pb.LimitChange(period=pb.LIMIT_PERIOD_DAY, amount=5)]}, "changes[0].kind"),
    ({"changes": [pb.LimitChange(kind=pb.LIMIT_KIND_LOSS, amount=5)]}, "changes[0].period"),
    ({"time_zone": "Mars/Olympus"}, "time_zone"),
])
async def test_bad_limits_name_the_field_and_change_nothing(
        client: Client, player: str, request_fields: dict[str, Any], field: str) -> None:
    await client.open(player)
    code, reason, meta = await refusal(client.call("SetLimits", pb.SetLimitsRequest(
        player_id=player, currency="USD", idempotency_key=key("bad"), **request_fields),
        "limits"))
    assert (code, meta.get("field")) == (grpc.StatusCode.INVALID_ARGUMENT, field), meta
    assert not (await limits(client, player)).limits


async def test_limits_need_their_own_scope(client: Client, player: str) -> None:
    await client.open(player)
    code, _, _ = await refusal(client.call("SetLimits", pb.SetLimitsRequest(
        player_id=player, currency="USD", idempotency_key=key("scope"),
        changes=[change(pb.LIMIT_KIND_LOSS, pb.LIMIT_PERIOD_DAY, 5)]), "game"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _, meta = await refusal(exclude(client, player, pb.BREAK_KIND_TIMEOUT, 3600))
    assert (code, meta["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, "duration_s")
