"""Refunds owed at a PSP a routed payment left (docs/ROUTING.md, "Late captures").

A deposit that cascaded away from a PSP may still be captured there: the PSP answered after
the bridge gave up on it. The inbox never credits that capture (the wallet is credited once,
by the PSP the payment is with); it records a refund owed (bridge.psp_refunds) in the same
transaction. This worker pays those back at the PSP that took the money.

Each owed refund is leased before the PSP is called, so replicas and passes don't call twice
at once, and every call for one refund carries the same idempotency key, so a crash or a lost
answer can't refund twice either. An unreachable PSP is asked again with backoff; a refusal,
or too many attempts, gives the refund up and names it on the payment for support to refund
by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import asyncpg

from gateway_bridge import metrics
from gateway_bridge.payments import store
from gateway_bridge.payments.model import PspRefund, refund_settled
from gateway_bridge.psp.base import PspAdapter, PspDeclined, PspUnavailable, RefundOrder

log = logging.getLogger("gateway_bridge.payments.refunds")

# Refunds tried per pass; the rest wait for the next one.
REFUNDS_PER_PASS_MAX = 20
# Longer than the longest PSP call the PSP settings allow (a 60 s timeout, 10 retries and
# their backoff), so a lease rarely runs out under a live call; when one does, the same
# idempotency key keeps the PSP from refunding twice, and the fencing token (the attempt
# number) keeps the late holder from overwriting the outcome.
REFUND_LEASE_MS = 15 * 60_000
# An unreachable PSP is asked again after 5 s, doubling up to 10 min, at most 12 times
# (about an hour); then support refunds by hand.
REFUND_BACKOFF_MS = 5_000
REFUND_BACKOFF_MAX_MS = 600_000
REFUND_ATTEMPTS_MAX = 12


def refund_order(r: PspRefund) -> RefundOrder:
    """The same key for every attempt at one capture, whatever the row's id (a restored
    database renumbers them)."""
    return RefundOrder(payment_id=r.payment_id, psp_reference=r.psp_reference,
                       amount_minor=r.amount_minor, currency=r.currency,
                       idempotency_key=f"refund-{r.payment_id}-{r.psp_reference}"[:255])


def backoff_ms(attempts: int) -> int:
    return int(min(REFUND_BACKOFF_MAX_MS, REFUND_BACKOFF_MS * 2 ** min(attempts - 1, 20)))


async def settle(conn: asyncpg.Connection, r: PspRefund, *, state: str, note: str,
                 source: str, reference: str | None = None, error: str | None = None,
                 fenced: bool = True) -> bool:
    """Records a refund's outcome with its payment's note and history line, in the caller's
    transaction. `fenced`: the worker's own attempt (its lease must still hold); else the
    PSP's notification, which settles an owed or requested refund. False when the refund
    had moved on meanwhile (nothing written)."""
    if fenced:
        written = await store.finish_refund(conn, r, state=state, refund_reference=reference,
                                            error=error)
    else:
        written = await store.settle_refund(conn, r.id, state=state,
                                            refund_reference=reference, error=error)
    if not written:
        return False
    p = await store.payment(conn, r.payment_id, lock=True)
    assert p is not None, "a refund's payment is never deleted"
    if state == "refunded":
        p = refund_settled(p, r.psp)
    elif state == "failed":
        p = refund_settled(p, r.psp, note)
    await store.save(conn, p)
    await store.add_history(conn, p, from_state=p.state, source=source,
                            note=f"refund failed at {r.psp}: {note}" if state == "failed"
                            else note)
    if state in ("refunded", "failed"):
        metrics.ROUTING_REFUNDS.labels(r.psp, state).inc()
    return True


class PspRefunds:
    def __init__(self, *, pool: asyncpg.Pool, adapters: Mapping[str, PspAdapter],
                 acquire_timeout_ms: int) -> None:
        self._pool = pool
        self._adapters = adapters
        self._acquire_timeout_s = acquire_timeout_ms / 1000

    async def refund_due(self) -> int:
        """One pass over the refunds that are due, one lease at a time; returns how many
        were tried."""
        tried = 0
        while tried < REFUNDS_PER_PASS_MAX:
            async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
                refund = await store.lease_due_refund(conn, lease_ms=REFUND_LEASE_MS)
            if refund is None:
                break
            await self._refund(refund)
            tried += 1
        return tried

    async def _refund(self, r: PspRefund) -> None:
        adapter = self._adapters.get(r.psp)
        if adapter is None:
            await self._finish(r, "failed", f"{r.psp} is not configured on this bridge; "
                                            f"refund {r.psp_reference} by hand")
            return
        try:
            result = await adapter.refund(refund_order(r))
        except PspDeclined as err:
            await self._finish(r, "failed", f"{r.psp} refused the refund: "
                                            f"{err.code or err.message}; refund "
                                            f"{r.psp_reference} by hand")
            return
        except PspUnavailable as err:
            if r.attempts >= REFUND_ATTEMPTS_MAX:
                await self._finish(r, "failed", f"{r.psp} did not answer after {r.attempts} "
                                                f"attempts ({err.message}); refund "
                                                f"{r.psp_reference} by hand")
                return
            async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
                await store.retry_refund(conn, r, after_ms=backoff_ms(r.attempts),
                                         error=err.message[:500])
            log.warning("refund not confirmed by the PSP", extra={
                "payment_id": r.payment_id, "psp": r.psp, "error": err.message})
            return
        what = f"{r.amount_minor} {r.currency} it captured after the payment left it"
        if result.settled:
            await self._finish(r, "refunded", f"refunded at {r.psp} as {result.reference}: "
                                              f"{what}", reference=result.reference)
        else:
            await self._finish(r, "requested", f"refund requested at {r.psp} as "
                                               f"{result.reference}: {what}; its "
                                               "notification settles it",
                               reference=result.reference)

    async def _finish(self, r: PspRefund, state: str, note: str, *,
                      reference: str | None = None) -> None:
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn, \
                conn.transaction(isolation="read_committed"):
            written = await settle(conn, r, state=state, note=note, source="bridge",
                                   reference=reference,
                                   error=note[:500] if state == "failed" else None)
        if written:
            log.info("refund at an abandoned PSP", extra={
                "payment_id": r.payment_id, "psp": r.psp, "state": state})


# --- support (walletctl refunds) ---------------------------------------------------------------

async def reopen(conn: asyncpg.Connection, refund_id: int, *, actor: str,
                 reason: str) -> PspRefund | None:
    """A failed refund tried again by the refund worker (the PSP is back, say); None unless
    the refund is `failed`. The payment keeps its note until the refund is made."""
    async with conn.transaction(isolation="read_committed"):
        r = await store.reopen_refund(conn, refund_id,
                                      note=f"retried by {actor}: {reason}"[:500])
        if r is None:
            return None
        p = await store.payment(conn, r.payment_id, lock=True)
        assert p is not None
        await store.add_history(conn, p, from_state=p.state, source="support",
                                note=f"refund at {r.psp} retried by {actor}: {reason}")
    return r


async def refunded_by_hand(conn: asyncpg.Connection, refund_id: int, *, reference: str,
                           actor: str, reason: str) -> PspRefund | None:
    """A failed refund support made at the PSP itself, recorded with the PSP's refund
    reference; the payment's note about it goes. None unless the refund is `failed`."""
    async with conn.transaction(isolation="read_committed"):
        r = await store.refunded_by_hand(conn, refund_id, reference=reference,
                                         note=f"refunded by hand by {actor}: {reason}"[:500])
        if r is None:
            return None
        p = await store.payment(conn, r.payment_id, lock=True)
        assert p is not None
        p = refund_settled(p, r.psp)
        await store.save(conn, p)
        await store.add_history(conn, p, from_state=p.state, source="support",
                                note=f"refunded by hand at {r.psp} as {reference} by "
                                     f"{actor}: {reason}")
    metrics.ROUTING_REFUNDS.labels(r.psp, "refunded").inc()
    return r
