"""Support's review of payments the risk rules held: approve (the payment goes on) or reject
(a held deposit is closed; a held withdrawal's reserve goes back to cash), each audited with
who, when and why (bridge.risk_review_log, the decision row, the payment's history).

Repeating the same verdict is safe: approve drives the payment on again (a PSP that was down
gets asked again with the same Idempotency-Key), reject repeats nothing. The opposite verdict
after one was given is a conflict.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gateway_bridge.payments import store
from gateway_bridge.payments.cashier import RESUME_AFTER_MS, Payments, psp_call_budget_ms
from gateway_bridge.payments.model import Action, Payment, Refusal, State, wallet_key
from gateway_bridge.payments.settings import PaymentSettings
from gateway_bridge.psp.base import PspConfig
from gateway_bridge.risk import store as risk_store
from gateway_bridge.shared.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    Refused,
    Unavailable,
)
from gateway_bridge.shared.terms import Direction
from gateway_bridge.wallet.client import WalletClient, WalletRefused, WalletUnavailable

ACTOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/\-]{0,127}")
REASON = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,498}[\x21-\x7e])?")
PENDING_ROWS_MAX = 1000
REVIEW_LOG_ROWS_MAX = 100
RISK_REJECTED = "RISK_REJECTED"


def _checked(*, reason: str, actor: str) -> None:
    if not ACTOR.fullmatch(actor):
        raise InvalidRequest("actor", "who decides: letters, digits and _ . : @ / -, at most 128")
    if not REASON.fullmatch(reason):
        raise InvalidRequest("reason", "why: printable ASCII, 1-500 characters")


class Reviews:
    def __init__(self, *, pool: asyncpg.Pool, wallet: WalletClient, payments: Payments,
                 settings: PaymentSettings, psps: Mapping[str, PspConfig],
                 acquire_timeout_ms: int) -> None:
        self._pool = pool
        self._acquire_timeout_s = acquire_timeout_ms / 1000
        self._wallet = wallet
        self._payments = payments
        self._settings = settings
        self._psps = psps

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """READ COMMITTED: the payment's row lock, taken first, serializes the verdicts."""
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn, \
                conn.transaction(isolation="read_committed"):
            yield conn

    async def pending(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """Held payments, oldest first, with every rule result."""
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            return await risk_store.pending_reviews(conn, max(1, min(limit, PENDING_ROWS_MAX)))

    async def log(self, payment_id: str) -> list[dict[str, Any]]:
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            return await risk_store.review_log(conn, payment_id, REVIEW_LOG_ROWS_MAX)

    async def approve(self, payment_id: str, *, reason: str, actor: str) -> Payment:
        """Lets a held payment go on: a deposit is sent to its PSP, a withdrawal's payout is
        requested. Raises NotFound, Conflict (not held, or rejected), Unavailable (the PSP
        or wallet is away: the approval stands, repeat it to drive the payment again)."""
        _checked(reason=reason, actor=actor)
        async with self._transaction() as conn:
            held = await self._held(conn, payment_id, verdict="approved", actor=actor,
                                    reason=reason)
            if held is not None:
                # From here the status sync looks after it again, as after any request.
                delay_ms = (self._settings.pending_limit_for(held.psp)
                            if held.direction is Direction.DEPOSIT else
                            RESUME_AFTER_MS + psp_call_budget_ms(self._psps[held.psp]))
                p = replace(held, attention=None, next_sync_at=datetime.now(UTC) + timedelta(
                    milliseconds=delay_ms))
                await store.save(conn, p)
                note = f"risk review approved by {actor}: {reason}"
                if held.request.payment_token_sha256:
                    # The bridge keeps no card token: only the cashier's retry brings it.
                    note += ("; the card is charged when the cashier retries with the same "
                             "Idempotency-Key and payment_token")
                await store.add_history(conn, p, from_state=p.state, source="support",
                                        note=note)
            await risk_store.log_review(conn, payment_id, action="approve", actor=actor,
                                        reason=reason)
        current, _ = await self._payments.get(payment_id)
        if current.direction is Direction.DEPOSIT:
            return await self._payments.resume_deposit(payment_id)
        return await self._payments.advance_withdrawal(payment_id, source="support")

    async def reject(self, payment_id: str, *, reason: str, actor: str) -> Payment:
        """Closes a held payment: a deposit becomes failed; a withdrawal's reserve is
        cancelled in the wallet (CancelWithdrawal) and it becomes rejected. Raises NotFound,
        Conflict (not held, or approved), Unavailable (wallet away: nothing changed)."""
        _checked(reason=reason, actor=actor)
        async with self._transaction() as conn:
            held = await self._held(conn, payment_id, verdict="rejected", actor=actor,
                                    reason=reason)
            if held is not None:
                if held.direction is Direction.WITHDRAWAL and held.withdrawal_id:
                    await self._cancel_reserve(held, f"risk review rejected by {actor}")
                p = replace(
                    held, state=(State.FAILED if held.direction is Direction.DEPOSIT
                                 else State.REJECTED),
                    refusal=Refusal(reason=RISK_REJECTED,
                                    message="rejected by support after a risk review"),
                    attention=None, next_sync_at=None, payout_destination=None)
                await store.save(conn, p)
                await store.add_history(conn, p, from_state=held.state, source="support",
                                        note=f"risk review rejected by {actor}: {reason}")
            await risk_store.log_review(conn, payment_id, action="reject", actor=actor,
                                        reason=reason)
        current, _ = await self._payments.get(payment_id)
        return current

    async def _held(self, conn: asyncpg.Connection, payment_id: str, *, verdict: str,
                    actor: str, reason: str) -> Payment | None:
        """Locks the payment (then its decision: the lock order in risk.queries) and closes
        the review with `verdict`. The payment when this call closed it; None when the same
        verdict was given before (a repeat)."""
        p = await store.payment(conn, payment_id, lock=True)
        decision = await risk_store.decision(conn, payment_id) if p else None
        if p is None or decision is None:
            raise NotFound(f"payment_id: no risk decision for {payment_id}")
        status = decision.review_status
        if status == verdict:
            return None
        if status != "pending":
            raise Conflict(f"payment_id: {payment_id} is not waiting for a risk review "
                           f"(decision {decision.outcome.value}, review {status})",
                           code="RISK_NOT_IN_REVIEW")
        if p.state not in (State.CREATED, State.REQUESTED, State.RESERVED):
            raise Conflict(f"payment_id: {payment_id} is {p.state}, no longer held",
                           code="RISK_NOT_IN_REVIEW")
        closed = await risk_store.close_review(conn, payment_id, verdict=verdict, actor=actor,
                                               reason=reason)
        assert closed, "pending review changed under the payment lock"
        return p

    async def _cancel_reserve(self, p: Payment, why: str) -> None:
        assert p.withdrawal_id is not None
        try:
            await self._wallet.cancel(withdrawal_id=p.withdrawal_id, reason=why[:200],
                                      key=wallet_key(Action.CANCEL, p.id))
        except WalletUnavailable:
            raise Unavailable("the wallet is unavailable; nothing was changed, reject "
                              "again", retry_after_s=1) from None
        except WalletRefused as err:
            raise Refused(f"the wallet refused to cancel the reserve: {err.message}",
                          code=err.reason) from None
