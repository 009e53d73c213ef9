"""The money-moving methods in one table: name, its field in a batch, how a request becomes a
command and how an outcome becomes the response. The single RPCs and ExecuteBatch both use
it, so an operation behaves the same whichever way it arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from wallet.v1 import wallet_service_pb2 as pb

from wallet_core.api import convert
from wallet_core.api.convert import Currencies
from wallet_core.domain import commands as cmd
from wallet_core.domain.outcome import Outcome


@dataclass(frozen=True, slots=True)
class MoneyMethod:
    name: str
    field: str  # in BatchOperation.operation and BatchResult.outcome
    command: Callable[[Any, Currencies], cmd.Command]
    response: Callable[[Outcome], Message]


def _plain(response_type: Any) -> Callable[[Outcome], Message]:
    def build(o: Outcome) -> Message:
        return response_type(result=convert.result(o))  # type: ignore[no-any-return]
    return build


def _split(response_type: Any) -> Callable[[Outcome], Message]:
    """Bet and Win answer with how the amount split between cash and bonus."""
    def build(o: Outcome) -> Message:
        return response_type(result=convert.result(o),  # type: ignore[no-any-return]
                             cash_amount=o.fields["cash_minor"],
                             bonus_amount=o.fields["bonus_minor"])
    return build


def _open(o: Outcome) -> Message:
    return pb.OpenWalletResponse(result=convert.result(o), created=o.fields["created"])


def _reserve(o: Outcome) -> Message:
    return pb.ReserveWithdrawalResponse(result=convert.result(o),
                                        withdrawal_id=o.fields["withdrawal_id"])


def _rollback(o: Outcome) -> Message:
    return pb.RollbackResponse(result=convert.result(o), outcome=convert.rollback_outcome(o),
                               cash_amount=o.fields["cash_minor"],
                               bonus_amount=o.fields["bonus_minor"])


def _grant(o: Outcome) -> Message:
    return pb.GrantBonusResponse(result=convert.result(o), bonus_id=o.fields["bonus_id"])


def _forfeit(o: Outcome) -> Message:
    return pb.ForfeitBonusResponse(result=convert.result(o),
                                   forfeited_amount=o.fields["forfeited_minor"])


def _limits(response_type: Any) -> Callable[[Outcome], Message]:
    def build(o: Outcome) -> Message:
        return response_type(result=convert.result(o),  # type: ignore[no-any-return]
                             limits=convert.limits(o.fields["limits"]))
    return build


METHODS = (
    MoneyMethod("OpenWallet", "open_wallet", convert.open_wallet, _open),
    MoneyMethod("Deposit", "deposit", convert.deposit, _plain(pb.DepositResponse)),
    MoneyMethod("ReserveWithdrawal", "reserve_withdrawal", convert.reserve_withdrawal,
                _reserve),
    MoneyMethod("CommitWithdrawal", "commit_withdrawal", convert.commit_withdrawal,
                _plain(pb.CommitWithdrawalResponse)),
    MoneyMethod("CancelWithdrawal", "cancel_withdrawal", convert.cancel_withdrawal,
                _plain(pb.CancelWithdrawalResponse)),
    MoneyMethod("ReverseWithdrawal", "reverse_withdrawal", convert.reverse_withdrawal,
                _plain(pb.ReverseWithdrawalResponse)),
    MoneyMethod("Bet", "bet", convert.bet, _split(pb.BetResponse)),
    MoneyMethod("Win", "win", convert.win, _split(pb.WinResponse)),
    MoneyMethod("Rollback", "rollback", convert.rollback, _rollback),
    MoneyMethod("GrantBonus", "grant_bonus", convert.grant_bonus, _grant),
    MoneyMethod("ForfeitBonus", "forfeit_bonus", convert.forfeit_bonus, _forfeit),
    MoneyMethod("Chargeback", "chargeback", convert.chargeback, _plain(pb.ChargebackResponse)),
    MoneyMethod("Adjust", "adjust", convert.adjust, _plain(pb.AdjustResponse)),
    MoneyMethod("SetLimits", "set_limits", convert.set_limits, _limits(pb.SetLimitsResponse)),
    MoneyMethod("Exclude", "exclude", convert.exclude, _limits(pb.ExcludeResponse)),
    MoneyMethod("Restrict", "restrict", convert.restrict, _limits(pb.RestrictResponse)),
)
BY_NAME = {m.name: m for m in METHODS}
BY_FIELD = {m.field: m for m in METHODS}
