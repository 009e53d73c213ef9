"""A payment as its readers see it: the cashier API (`GET /v1/payments/{id}` and the answers
to creation) and `walletctl payment find|show` print the same fields under the same names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway_bridge.payments.model import Payment, PspRefund, instructions_to_json


def payment_view(p: Payment, history: list[dict[str, Any]] | None = None, *,
                 risk: dict[str, Any] | None = None,
                 refunds: Sequence[PspRefund] = ()) -> dict[str, Any]:
    """`history`: the payment's history lines, when asked for; `risk`: its screening's view,
    when it has one worth showing; `refunds`: captures at PSPs it left, and their refunds."""
    view: dict[str, Any] = {
        "id": p.id, "direction": p.direction.value, "state": p.state.value, "psp": p.psp,
        "method": p.method, "player_id": p.player_id, "currency": p.currency,
        "amount_minor": p.amount_minor, "settled_minor": p.settled_minor,
        "charged_back_minor": p.charged_back_minor, "psp_reference": p.psp_reference,
        "withdrawal_id": p.withdrawal_id, "attention": p.attention,
        "created_at": p.created_at.isoformat(), "updated_at": p.updated_at.isoformat(),
    }
    if p.wallet_currency:
        # Paid in `currency`, credited in `wallet_currency`: the quote shown at the start
        # (indicative), and once credited the rate actually used (docs/FX.md).
        view["wallet_currency"] = p.wallet_currency
        view["fx"] = p.fx.to_json() if p.fx is not None else {}
    if p.instructions:
        view["instructions"] = {k: val for k, val in instructions_to_json(p.instructions).items()
                                if val and k != "psp_reference"}
    if p.refusal:
        view["refusal"] = p.refusal.to_json()
    if p.routing is not None:
        # Which PSPs were eligible, in what order, why, and the attempts that cascaded it.
        view["routing"] = p.routing.to_json()
    if refunds:
        view["refunds"] = [r.to_json() for r in refunds]
    if risk is not None:
        view["risk"] = risk
    if history is not None:
        view["history"] = [{**h, "at": h["at"].isoformat()} for h in history]
    return view
