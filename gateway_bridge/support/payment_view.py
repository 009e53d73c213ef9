"""A payment as `walletctl payment find|show` prints it: the cashier API's view of it (the
same fields, the same names) with its history.

This is a copy of `gateway_bridge.http.cashier.payment_view` without the risk screening:
support may not import the HTTP edge (tests/project/test_project_rules.py), and the one
home both could import, `gateway_bridge/payments/`, belongs to another change.
tests/bridge/integration/test_support_cli.py (`payment show` prints what the cashier API
answers) fails the moment the two differ; when the view moves to payments/, this goes.
"""

from __future__ import annotations

from typing import Any

from gateway_bridge.payments.model import Payment, instructions_to_json


def payment_view(p: Payment, history: list[dict[str, Any]]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": p.id, "direction": p.direction.value, "state": p.state.value, "psp": p.psp,
        "method": p.method, "player_id": p.player_id, "currency": p.currency,
        "amount_minor": p.amount_minor, "settled_minor": p.settled_minor,
        "charged_back_minor": p.charged_back_minor, "psp_reference": p.psp_reference,
        "withdrawal_id": p.withdrawal_id, "attention": p.attention,
        "created_at": p.created_at.isoformat(), "updated_at": p.updated_at.isoformat(),
    }
    if p.wallet_currency:
        # Paid in `currency`, credited in `wallet_currency` (docs/FX.md).
        view["wallet_currency"] = p.wallet_currency
        view["fx"] = p.fx.to_json() if p.fx is not None else {}
    if p.instructions:
        view["instructions"] = {k: val for k, val in instructions_to_json(p.instructions).items()
                                if val and k != "psp_reference"}
    if p.refusal:
        view["refusal"] = p.refusal.to_json()
    view["history"] = [{**h, "at": h["at"].isoformat()} for h in history]
    return view
