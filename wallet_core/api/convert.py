"""Conversion between wallet.v1 messages and domain commands/outcomes.

Every request field is validated here (through domain.validation) before a command exists,
so a malformed request never reaches the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from wallet.v1 import wallet_service_pb2 as pb

from service_kit import fx
from wallet_core.domain import commands as cmd
from wallet_core.domain import errors
from wallet_core.domain import validation as v
from wallet_core.domain.errors import InvalidField
from wallet_core.domain.ledger import Balances, BonusState
from wallet_core.domain.limits import (
    RESTRICTIONS,
    SELF_EXCLUSION_MAX,
    SELF_EXCLUSION_MIN,
    TIMEOUT_MAX,
    TIMEOUT_MIN,
    Change,
    Guard,
    Kind,
    Period,
    zone,
)
from wallet_core.domain.money import Currency
from wallet_core.domain.outcome import Outcome, TransactionView

Currencies = Mapping[str, Currency]
_BUCKETS = {pb.BUCKET_CASH: "cash", pb.BUCKET_BONUS: "bonus"}
_BONUS_STATES = {"active": pb.BONUS_STATE_ACTIVE, "converted": pb.BONUS_STATE_CONVERTED,
                 "forfeited": pb.BONUS_STATE_FORFEITED, "expired": pb.BONUS_STATE_EXPIRED}
_ROLLBACK_OUTCOMES: dict[str, pb.RollbackOutcome] = {"reversed": pb.ROLLBACK_OUTCOME_REVERSED,
                      "already_rolled_back": pb.ROLLBACK_OUTCOME_ALREADY_ROLLED_BACK,
                      "bet_not_found": pb.ROLLBACK_OUTCOME_BET_NOT_FOUND}


def wallet(req: pb.OpenWalletRequest | pb.GetBalanceRequest | pb.DepositRequest
            | pb.ReserveWithdrawalRequest | pb.BetRequest | pb.WinRequest | pb.RollbackRequest
            | pb.GrantBonusRequest | pb.ChargebackRequest | pb.AdjustRequest
            | pb.GetBonusesRequest | pb.ListTransactionsRequest | pb.SetLimitsRequest
            | pb.GetLimitsRequest | pb.ExcludeRequest | pb.RestrictRequest,
            currencies: Currencies) -> tuple[str, Currency]:
    return v.identifier(req.player_id, "player_id"), v.currency(req.currency, currencies)


def open_wallet(req: pb.OpenWalletRequest, cur: Currencies) -> cmd.OpenWallet:
    player, currency = wallet(req, cur)
    return cmd.OpenWallet(player_id=player, currency=currency.code,
                          idempotency_key=v.idempotency_key(req.idempotency_key))


def _psp_transfer_fields(req: pb.DepositRequest | pb.ChargebackRequest,
                        cur: Currencies) -> dict[str, Any]:
    """Deposit and Chargeback carry the same fields, validated the same way."""
    player, currency = wallet(req, cur)
    return {"player_id": player, "currency": currency.code,
            "amount_minor": v.positive_amount(req.amount, currency),
            "psp": v.identifier(req.psp, "psp"),
            "psp_reference": v.identifier(req.psp_reference, "psp_reference"),
            "idempotency_key": v.idempotency_key(req.idempotency_key)}


def deposit(req: pb.DepositRequest, cur: Currencies) -> cmd.Deposit:
    fields = _psp_transfer_fields(req, cur)
    if not req.HasField("conversion"):
        return cmd.Deposit(**fields)
    wallet_currency = cur[fields["currency"]]
    conversion = _conversion(req.conversion, wallet_currency, cur)
    expected = _converted(conversion, wallet_currency, cur)
    if fields["amount_minor"] != expected:
        raise InvalidField("amount", f"must be {expected}: conversion.paid_amount at "
                                     "conversion.rate less conversion.spread_bps, rounded "
                                     "down (docs/FX.md)")
    return cmd.Deposit(**fields, conversion=conversion)


def _conversion(c: pb.Conversion, wallet_currency: Currency,
                cur: Currencies) -> cmd.Conversion:
    """A deposit's conversion, every field checked and named (`conversion.<field>`)."""
    paid = v.currency(c.paid_currency, cur, "conversion.paid_currency")
    if paid.code == wallet_currency.code:
        raise InvalidField("conversion.paid_currency", "must differ from currency (a deposit "
                                                       "in the wallet's currency has no "
                                                       "conversion)")
    try:
        fx.parse_rate(c.rate, field="conversion.rate")
        fx.check_spread(c.spread_bps, field="conversion.spread_bps")
    except fx.FxError as err:
        raise InvalidField(err.field, err.problem) from None
    rate_time = _required_time(c, "rate_time", field="conversion.rate_time")
    return cmd.Conversion(
        paid_currency=paid.code,
        paid_minor=v.positive_amount(c.paid_amount, paid, "conversion.paid_amount"),
        rate=c.rate, spread_bps=c.spread_bps,
        rate_source=v.identifier(c.rate_source, "conversion.rate_source"),
        rate_time=rate_time)


def _converted(c: cmd.Conversion, wallet_currency: Currency, cur: Currencies) -> int:
    """The credit the conversion is worth (service_kit.fx), positive and within the cap."""
    try:
        credited = fx.convert(paid_minor=c.paid_minor, paid_scale=cur[c.paid_currency].scale,
                              rate=fx.parse_rate(c.rate), wallet_scale=wallet_currency.scale,
                              spread_bps=c.spread_bps,
                              credited_max_minor=wallet_currency.amount_max_minor)
    except fx.FxError as err:
        raise InvalidField("amount", err.problem, reason=errors.AMOUNT_ABOVE_MAXIMUM) from None
    if credited <= 0:
        raise InvalidField("conversion.paid_amount", "converts to less than one minor unit "
                                                     f"of {wallet_currency.code}",
                           reason=errors.AMOUNT_NOT_POSITIVE)
    return credited


def chargeback(req: pb.ChargebackRequest, cur: Currencies) -> cmd.Chargeback:
    return cmd.Chargeback(**_psp_transfer_fields(req, cur))


def reserve_withdrawal(req: pb.ReserveWithdrawalRequest, cur: Currencies) -> cmd.ReserveWithdrawal:
    player, currency = wallet(req, cur)
    return cmd.ReserveWithdrawal(player_id=player, currency=currency.code,
                                 amount_minor=v.positive_amount(req.amount, currency),
                                 psp=v.identifier(req.psp, "psp"),
                                 idempotency_key=v.idempotency_key(req.idempotency_key))


def commit_withdrawal(req: pb.CommitWithdrawalRequest, _: Currencies) -> cmd.CommitWithdrawal:
    return cmd.CommitWithdrawal(withdrawal_id=v.numeric_id(req.withdrawal_id, "withdrawal_id"),
                                idempotency_key=v.idempotency_key(req.idempotency_key))


def cancel_withdrawal(req: pb.CancelWithdrawalRequest, _: Currencies) -> cmd.CancelWithdrawal:
    return cmd.CancelWithdrawal(withdrawal_id=v.numeric_id(req.withdrawal_id, "withdrawal_id"),
                                reason=v.free_text(req.reason, "reason", required=True),
                                idempotency_key=v.idempotency_key(req.idempotency_key))


def reverse_withdrawal(req: pb.ReverseWithdrawalRequest, _: Currencies) -> cmd.ReverseWithdrawal:
    return cmd.ReverseWithdrawal(withdrawal_id=v.numeric_id(req.withdrawal_id, "withdrawal_id"),
                                 reason=v.free_text(req.reason, "reason", required=True),
                                 idempotency_key=v.idempotency_key(req.idempotency_key))


def bet(req: pb.BetRequest, cur: Currencies) -> cmd.Bet:
    player, currency = wallet(req, cur)
    return cmd.Bet(player_id=player, currency=currency.code,
                   amount_minor=v.positive_amount(req.amount, currency),
                   game_id=v.identifier(req.game_id, "game_id"),
                   round_id=v.identifier(req.round_id, "round_id"),
                   idempotency_key=v.idempotency_key(req.idempotency_key))


def win(req: pb.WinRequest, cur: Currencies) -> cmd.Win:
    player, currency = wallet(req, cur)
    return cmd.Win(player_id=player, currency=currency.code,
                   amount_minor=v.positive_amount(req.amount, currency),
                   game_id=v.identifier(req.game_id, "game_id"),
                   round_id=v.identifier(req.round_id, "round_id"),
                   idempotency_key=v.idempotency_key(req.idempotency_key))


def rollback(req: pb.RollbackRequest, cur: Currencies) -> cmd.Rollback:
    player, currency = wallet(req, cur)
    return cmd.Rollback(player_id=player, currency=currency.code,
                        game_id=v.identifier(req.game_id, "game_id"),
                        bet_idempotency_key=v.idempotency_key(req.bet_idempotency_key,
                                                              "bet_idempotency_key"),
                        idempotency_key=v.idempotency_key(req.idempotency_key))


def _required_time(message: Message, name: str, *, field: str) -> datetime:
    """A Timestamp field that must be set and within datetime's range, as UTC."""
    if not message.HasField(name):
        raise InvalidField(field, "is required", reason=errors.FIELD_REQUIRED)
    try:
        at: datetime = getattr(message, name).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidField(field, "is not a valid timestamp") from None
    return at


def grant_bonus(req: pb.GrantBonusRequest, cur: Currencies) -> cmd.GrantBonus:
    player, currency = wallet(req, cur)
    expires_at = _required_time(req, "expires_at", field="expires_at")
    return cmd.GrantBonus(
        player_id=player, currency=currency.code,
        amount_minor=v.positive_amount(req.amount, currency),
        wagering_required_minor=v.non_negative_amount(req.wagering_requirement, currency,
                                                      "wagering_requirement"),
        expires_at=expires_at, idempotency_key=v.idempotency_key(req.idempotency_key))


def forfeit_bonus(req: pb.ForfeitBonusRequest, _: Currencies) -> cmd.ForfeitBonus:
    return cmd.ForfeitBonus(bonus_id=v.numeric_id(req.bonus_id, "bonus_id"),
                            idempotency_key=v.idempotency_key(req.idempotency_key))


def adjust(req: pb.AdjustRequest, cur: Currencies) -> cmd.Adjust:
    player, currency = wallet(req, cur)
    bucket = _BUCKETS.get(req.bucket)
    if bucket is None:
        raise InvalidField("bucket", "must be BUCKET_CASH or BUCKET_BONUS")
    return cmd.Adjust(player_id=player, currency=currency.code, bucket=bucket,
                      amount_minor=v.signed_amount(req.amount, currency),
                      reason=v.free_text(req.reason, "reason", required=True),
                      idempotency_key=v.idempotency_key(req.idempotency_key))


_LIMIT_KINDS = {pb.LIMIT_KIND_DEPOSIT: Kind.DEPOSIT, pb.LIMIT_KIND_LOSS: Kind.LOSS,
                pb.LIMIT_KIND_WAGER: Kind.WAGER}
_LIMIT_PERIODS = {pb.LIMIT_PERIOD_DAY: Period.DAY, pb.LIMIT_PERIOD_WEEK: Period.WEEK,
                  pb.LIMIT_PERIOD_MONTH: Period.MONTH}
_BREAKS = {pb.BREAK_KIND_TIMEOUT: "timeout", pb.BREAK_KIND_SELF_EXCLUSION: "self_exclusion"}


def set_limits(req: pb.SetLimitsRequest, cur: Currencies) -> cmd.SetLimits:
    player, currency = wallet(req, cur)
    if not req.changes and not req.time_zone:
        raise InvalidField("changes", "give at least one change (or a time_zone)")
    if len(req.changes) > len(_LIMIT_KINDS) * len(_LIMIT_PERIODS):
        raise InvalidField("changes", "at most one change per kind and period")
    changes = []
    for i, change in enumerate(req.changes):
        kind = _LIMIT_KINDS.get(change.kind)
        period = _LIMIT_PERIODS.get(change.period)
        if kind is None:
            raise InvalidField(f"changes[{i}].kind", "LIMIT_KIND_DEPOSIT, _LOSS or _WAGER")
        if period is None:
            raise InvalidField(f"changes[{i}].period", "LIMIT_PERIOD_DAY, _WEEK or _MONTH")
        if change.remove and change.amount:
            raise InvalidField(f"changes[{i}].amount", "must be 0 when remove is set")
        amount = None if change.remove else v.non_negative_amount(
            change.amount, currency, f"changes[{i}].amount")
        changes.append(Change(kind, period, amount))
    if len({(c.kind, c.period) for c in changes}) != len(changes):
        raise InvalidField("changes", "at most one change per kind and period")
    # The same changes in another order are the same request (its fingerprint).
    changes.sort(key=lambda c: (c.kind.value, c.period.value))
    time_zone = None
    if req.time_zone:
        zone(req.time_zone)
        time_zone = req.time_zone
    return cmd.SetLimits(player_id=player, currency=currency.code, changes=tuple(changes),
                         time_zone=time_zone,
                         idempotency_key=v.idempotency_key(req.idempotency_key))


def exclude(req: pb.ExcludeRequest, cur: Currencies) -> cmd.Exclude:
    player, currency = wallet(req, cur)
    kind = _BREAKS.get(req.kind)
    if kind is None:
        raise InvalidField("kind", "BREAK_KIND_TIMEOUT or BREAK_KIND_SELF_EXCLUSION")
    if req.permanent:
        if kind != "self_exclusion":
            raise InvalidField("permanent", "only a self-exclusion can be permanent")
        if req.duration_s:
            raise InvalidField("duration_s", "must be 0 for a permanent self-exclusion")
        duration_s = None
    else:
        if req.duration_s <= 0:
            raise InvalidField("duration_s", "a positive number of seconds")
        low, high = ((TIMEOUT_MIN, TIMEOUT_MAX) if kind == "timeout"
                     else (SELF_EXCLUSION_MIN, SELF_EXCLUSION_MAX))
        if not low.total_seconds() <= req.duration_s <= high.total_seconds():
            raise InvalidField("duration_s", "a time-out lasts 24 hours to 6 weeks, a "
                                             "self-exclusion 6 months to 10 years")
        duration_s = req.duration_s
    return cmd.Exclude(player_id=player, currency=currency.code, break_kind=kind,
                       duration_s=duration_s, permanent=req.permanent,
                       idempotency_key=v.idempotency_key(req.idempotency_key))


def restrict(req: pb.RestrictRequest, cur: Currencies) -> cmd.Restrict:
    player, currency = wallet(req, cur)
    until = (req.until.ToDatetime(tzinfo=UTC) if req.HasField("until") else None)
    if req.lift:
        if req.reason:
            raise InvalidField("reason", "must be empty when lift is true")
        if until is not None:
            raise InvalidField("until", "must be unset when lift is true")
        reason = None
    else:
        if req.reason not in RESTRICTIONS:
            raise InvalidField("reason", "UNDERAGE or COUNTRY_BLOCKED (or lift = true)")
        reason = req.reason
    return cmd.Restrict(player_id=player, currency=currency.code, reason=reason, until=until,
                        idempotency_key=v.idempotency_key(req.idempotency_key))


# -- responses ---------------------------------------------------------------------------------

_KIND_CODES = {k: code for code, k in _LIMIT_KINDS.items()}
_PERIOD_CODES = {p: code for code, p in _LIMIT_PERIODS.items()}


def limits(view: Mapping[str, Any]) -> pb.Limits:
    """A guard's view as recorded (Guard.to_json of the guard as of the call)."""
    g = Guard.from_json(view)
    out = pb.Limits(excluded_permanently=g.excluded_permanently, time_zone=g.tz)
    for (kind, period), amount in sorted(g.limits.items()):
        u = g.usage.get((kind, period))
        used = u.used_minor if u is not None else 0
        limit = pb.Limit(kind=_KIND_CODES[kind], period=_PERIOD_CODES[period], amount=amount,
                         used=used, remaining=max(0, amount - used))
        if u is not None:
            limit.period_start.FromSeconds(u.since_s)
        out.limits.append(limit)
    for p in g.pending:
        pending = pb.PendingLimit(kind=_KIND_CODES[p.kind], period=_PERIOD_CODES[p.period],
                                  amount=p.amount_minor or 0, remove=p.amount_minor is None)
        pending.effective_at.FromDatetime(p.effective_at.astimezone(UTC))
        out.pending.append(pending)
    if g.timeout_until is not None:
        out.timeout_until.FromDatetime(g.timeout_until.astimezone(UTC))
    if g.excluded_until is not None:
        out.excluded_until.FromDatetime(g.excluded_until.astimezone(UTC))
    if g.restriction is not None:
        out.restriction = g.restriction
        if g.restricted_until is not None:
            out.restricted_until.FromDatetime(g.restricted_until.astimezone(UTC))
    return out


def _timestamp(value: object) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)  # type: ignore[arg-type]
    return ts


def balances(currency: str, b: Balances) -> pb.Balances:
    return pb.Balances(currency=currency, cash=b.cash, bonus=b.bonus, reserved=b.reserved,
                       available=b.available)


def result(o: Outcome) -> pb.OperationResult:
    assert o.balances is not None, "rejections are answered as errors, not results"
    return pb.OperationResult(transaction_id=str(o.transaction_id),
                              balances=balances(o.currency, o.balances), replay=o.replay,
                              created_at=_timestamp(o.created_at))


def rollback_outcome(o: Outcome) -> pb.RollbackOutcome:
    return _ROLLBACK_OUTCOMES[o.fields["outcome"]]


def bonus(b: BonusState) -> pb.Bonus:
    return pb.Bonus(bonus_id=str(b.bonus_id), state=_BONUS_STATES[b.state],
                    granted_amount=b.granted_minor, balance=b.balance_minor,
                    wagering_requirement=b.wagering_required_minor, wagered=b.wagered_minor,
                    expires_at=_timestamp(b.expires_at), created_at=_timestamp(b.created_at))


def transaction(t: TransactionView) -> pb.Transaction:
    message = pb.Transaction(
        transaction_id=str(t.transaction_id), kind=t.kind, status=t.status,
        reason=t.reason or "", player_id=t.player_id or "", currency=t.currency or "",
        caller=t.caller, idempotency_key=t.idempotency_key,
        created_at=_timestamp(t.created_at),
        postings=[pb.Posting(account=p.account, amount=p.amount_minor,
                             currency=p.currency or t.currency or "") for p in t.postings],
        details=t.details)
    if t.balances is not None and t.currency:
        message.balances.CopyFrom(balances(t.currency, t.balances))
    return message
