"""KYC use cases (docs/COMPLIANCE.md): start a player's check at the provider, apply the
provider's signed answer, and the gates the cashier asks before money moves.

The provider is called outside any row lock (a call can take seconds); the player's row is
locked only to read and to write the outcome. Starting twice at once is harmless: the
provider gets the same idempotency key for the same attempt, and the second writer finds the
first's check already recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from gateway_bridge.kyc import model, store
from gateway_bridge.kyc.model import CheckResult, Gate, KycRefused, KycState, Verification
from gateway_bridge.kyc.onfido import NAME, OnfidoClient, read_webhook
from gateway_bridge.kyc.settings import KycSettings
from gateway_bridge.psp.base import PspUnavailable
from gateway_bridge.wallet.client import WalletClient, WalletRefused, WalletUnavailable
from service_kit import pg

log = logging.getLogger("gateway_bridge.kyc")
# Late checks asked about per pass.
LATE_POLLS_MAX = 20
# Restrictions sent to the wallet per pass.
RESTRICTIONS_PER_PASS_MAX = 100

# Checks one player may start (each costs money at the provider); then support decides.
CHECKS_MAX = 5


class KycService:
    def __init__(self, *, pool: asyncpg.Pool, settings: KycSettings, acquire_timeout_ms: int,
                 wallet: WalletClient,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._pool = pool
        self._wallet = wallet
        self._settings = settings
        self._acquire_timeout_s = acquire_timeout_ms / 1000
        self._clock = clock
        self._client = (OnfidoClient(settings.provider) if settings.provider is not None
                        else None)

    @property
    def enabled(self) -> bool:
        return self._client is not None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """READ COMMITTED: the player's row lock serializes its writers."""
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn, \
                conn.transaction(isolation="read_committed"):
            yield conn

    async def current(self, player_id: str) -> Verification:
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            v = await store.verification(conn, player_id)
        return model.current(v, self._clock().date())

    async def view(self, player_id: str) -> dict[str, Any]:
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            return await support_view(conn, player_id, self._clock().date())

    # -- checks ------------------------------------------------------------------------------

    async def start(self, player_id: str, *, first_name: str, last_name: str,
                    actor: str) -> Verification:
        """A check for the player; a check already running, or a verification still valid,
        is answered as it is (starting is idempotent). The player's row stays locked while
        the provider is asked, so two calls never pay for two checks."""
        assert self._client is not None, "KYC is off: the edge refuses before this"
        today = self._clock().date()
        async with self._transaction() as conn:
            v = await store.verification(conn, player_id, lock=True)
            if v.state is KycState.PENDING \
                    or model.current(v, today).state is KycState.VERIFIED:
                return v
            if v.checks_started >= CHECKS_MAX:
                raise KycRefused("KYC_CHECKS_EXHAUSTED", f"{CHECKS_MAX} checks were started "
                                 "for this player; support decides what comes next")
            started = await self._client.start(
                player_id=player_id, first_name=first_name, last_name=last_name,
                attempt=v.checks_started + 1, applicant_id=v.applicant_id)
            after = model.started(v, provider=NAME, applicant_id=started.applicant_id,
                                  check_id=started.check_id, now=self._clock())
            await store.save(conn, after, before=model.current(v, today), source="api",
                             actor=actor, note=f"check {started.check_id} started at {NAME}")
        return after

    async def webhook(self, headers: Any, body: bytes) -> str:
        """A provider's signed webhook (WebhookRejected when it is not one). A completed
        check of a player waiting for it is fetched from the provider and applied; anything
        else is recorded and left. Returns what happened. PspUnavailable: the provider must
        deliver again (the check is not known yet, or the provider did not answer)."""
        assert self._client is not None and self._settings.provider is not None
        event = read_webhook(headers, body, token=self._settings.provider.webhook_secret)
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            if await store.event_seen(conn, NAME, event.event_key):
                return "duplicate"
            v = await store.by_check(conn, NAME, event.check_id)
        if v is None:
            # A fast provider can answer before the check id is saved: deliver again.
            raise PspUnavailable(NAME, f"check {event.check_id} is not known (yet)")
        waiting = event.action == "check.completed" and v.state is KycState.PENDING
        # Only a check a player waits for costs a call to the provider: a replayed or stale
        # webhook is recorded without one.
        result = await self._client.result(event.check_id) if waiting else None
        if waiting and result is None:
            raise PspUnavailable(NAME, f"check {event.check_id} is not complete yet")
        return await self._apply(event.check_id, result, event_key=event.event_key,
                                 action=event.action, source="webhook")

    async def _apply(self, check_id: str, result: CheckResult | None, *, event_key: str,
                     action: str, source: str) -> str:
        """A check's answer applied to the player waiting for it, with the record of what
        brought it (a webhook, or a poll): once."""
        async with self._transaction() as conn:
            v = await store.by_check(conn, NAME, check_id, lock=True)
            after = (None if v is None or result is None
                     else model.answered(v, result, now=self._clock()))
            if after is not None:
                after = replace(after, restriction=self._restriction(after))
            outcome = (f"applied: {after.state.value}" if after is not None
                       else f"ignored: {action}")
            if not await store.record_event(conn, NAME, event_key, outcome):
                return "duplicate"
            if v is not None and after is not None and result is not None:
                note = (f"check {check_id}: clear" if result.clear
                        else f"check {check_id}: consider (rejected)")
                if after.restriction != v.restriction:
                    note += f"; wallet restriction: {after.restriction or 'lifted'}"
                await store.save(conn, after, before=v, source=source, actor=NAME, note=note)
        if v is not None and after is not None and after.restriction != v.restriction:
            try:
                await self.send_restriction(v.player_id)
            except pg.DB_ERRORS as err:  # the poller sends it later
                log.warning("kyc restriction: database trouble",
                            extra={"error": type(err).__name__})
        return outcome

    # -- the wallet's restriction ------------------------------------------------------------

    def _restriction(self, v: Verification) -> str:
        s = self._settings
        return model.play_restriction(v, today=self._clock().date(),
                                      min_age_by_country=s.min_age_by_country,
                                      min_age_default=s.min_age,
                                      blocked_countries=s.blocked_countries)

    async def send_restriction(self, player_id: str) -> str:
        """Sends the wallet the player's restriction if it lacks it. The player's row stays
        locked meanwhile, so two senders never deliver versions out of order (a row another
        sender holds is skipped). The call's key names the version and what is asked, so a
        resend replays. Returns "sent", "refused" (tried again a poll later), "unavailable"
        or "nothing" (the wallet has it, or another sender holds the row)."""
        currency = self._settings.threshold_currency
        async with self._transaction() as conn:
            found = await store.restriction_for_sending(conn, player_id)
            if found is None:
                return "nothing"
            encoded, version = found
            wanted = model.decode_restriction(encoded, self._clock())
            asked = "lift" if wanted is None else ":".join(
                (wanted[0], wanted[1].isoformat() if wanted[1] else "lifted"))
            await store.restriction_tried(conn, player_id)
            try:
                # The restriction lives on the player's wallets and one opened later
                # inherits it, so a player with none yet gets one to carry it.
                await self._wallet.open_wallet(player_id=player_id, currency=currency)
                await self._wallet.restrict(
                    player_id=player_id, currency=currency,
                    reason=None if wanted is None else wanted[0],
                    until=None if wanted is None else wanted[1],
                    key=f"bridge:kyc-restrict:{player_id}:{version}:{asked}:{currency}")
            except WalletUnavailable:
                return "unavailable"
            except WalletRefused as err:
                log.error("kyc restriction refused by the wallet",
                          extra={"player_id": player_id, "error": err.reason or err.code})
                return "refused"
            await store.restriction_sent(conn, player_id, version)
        return "sent"

    async def send_restrictions(self) -> int:
        """Sends the wallet every restriction it lacks (those the wallet could not take when
        the answer came): on every poll, stopping at the first sign the wallet is away.
        Returns how many the wallet took."""
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            due = await store.unsent_restrictions(
                conn, limit=RESTRICTIONS_PER_PASS_MAX,
                retry_after_ms=self._settings.poll_interval_ms)
        sent = 0
        for player_id in due:
            outcome = await self.send_restriction(player_id)
            if outcome == "unavailable":
                break
            sent += outcome == "sent"
        return sent

    async def reassess(self, *, page_size: int = 500) -> int:
        """Works out again, under the current settings, the restriction of every verified
        player (a blocked country or a minimum age changed, or players verified before
        restrictions existed); a changed one is saved with its reason in the history and
        sent. Returns how many changed."""
        changed = 0
        last = ""
        while True:
            async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
                page = await store.verified_after(conn, last, limit=page_size)
            for player_id in page:
                async with self._transaction() as conn:
                    v = await store.verification(conn, player_id, lock=True)
                    wanted = self._restriction(v)
                    if v.state is not KycState.VERIFIED or wanted == v.restriction:
                        continue
                    await store.save(conn, replace(v, restriction=wanted), before=v,
                                     source="reassess", actor="settings",
                                     note=f"wallet restriction: {wanted or 'lifted'} "
                                          "under the current age and country settings")
                changed += 1
            if len(page) < page_size:
                break
            last = page[-1]
        if changed:
            await self.send_restrictions()
        return changed

    async def poll_late(self) -> int:
        """Asks the provider about checks pending longer than `late_after_ms` (its webhook
        lost, or never sent); each is asked again a period later. Returns how many."""
        if self._client is None:
            return 0
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            late = await store.late_checks(conn, late_ms=self._settings.late_after_ms,
                                           limit=LATE_POLLS_MAX)
        for player_id, check_id in late:
            async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
                await store.touch(conn, player_id)
            try:
                result = await self._client.result(check_id)
            except PspUnavailable as err:
                log.warning("kyc poll failed", extra={"check_id": check_id,
                                                      "error": err.message})
                continue
            if result is not None:
                await self._apply(check_id, result, event_key=f"poll:{check_id}",
                                  action="poll", source="poll")
        return len(late)

    async def run_polls(self, interval_ms: int) -> None:
        """The poller's loop (the server runs it while KYC is on)."""
        reassessed = False
        while True:
            try:
                if not reassessed:
                    # Settings change only with a restart: the first pass applies them.
                    await self.reassess()
                    reassessed = True
                await self.poll_late()
                await self.send_restrictions()
            except pg.DB_ERRORS as err:
                log.warning("kyc poll: database trouble", extra={"error": type(err).__name__})
            except Exception:
                # A bug met by one pass must not stop the poller: late checks and unsent
                # restrictions would then wait for a restart (KycRestrictionUnsent pages).
                log.exception("kyc poll: unexpected error; trying again next interval")
            await asyncio.sleep(interval_ms / 1000)

    # -- gates -------------------------------------------------------------------------------

    async def withdrawal_gate(self, player_id: str) -> Gate | None:
        if not self.enabled:
            return None
        return model.withdrawal_gate(await self.current(player_id))

    async def deposit_gate(self, player_id: str, *, amount_minor: int, currency: str,
                           stored: bool = False) -> Gate | None:
        """Deposits in the threshold's currency count toward the threshold; an unverified
        player's deposit in another currency is refused (fail closed: it is not converted
        to count). `stored`: the deposit is already among the player's open ones (the check
        after storing, which catches deposits started side by side)."""
        if not self.enabled:
            return None
        s = self._settings
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            v = model.current(await store.verification(conn, player_id), self._clock().date())
            counted = currency == s.threshold_currency
            deposited = (await store.deposited_minor(conn, player_id, currency)
                         if counted and v.state is not KycState.VERIFIED else 0)
        return model.deposit_gate(
            v, deposited_minor=deposited, amount_minor=0 if stored else amount_minor,
            threshold_minor=s.deposit_threshold_minor if counted else 0,
            today=self._clock().date(), min_age_by_country=s.min_age_by_country,
            min_age_default=s.min_age, blocked_countries=s.blocked_countries)


async def allow_cash_out(conn: asyncpg.Connection, player_id: str, *, actor: str,
                         reason: str, now: datetime) -> Verification:
    """Support's decision after reviewing a rejected player (walletctl kyc allow-cash-out),
    kept in the history with who and why; KycRefused unless the player is rejected."""
    async with conn.transaction(isolation="read_committed"):
        v = await store.verification(conn, player_id, lock=True)
        after = model.cash_out_allowed(v, now=now)
        await store.save(conn, after, before=v, source="support", actor=actor,
                         note=f"cash-out allowed after review: {reason}")
    return after


async def support_view(conn: asyncpg.Connection, player_id: str,
                       today: date) -> dict[str, Any]:
    """The player's verification and its history, as support sees it."""
    v = model.current(await store.verification(conn, player_id), today)
    history = await store.history(conn, player_id)
    return {"player_id": v.player_id, "state": v.state.value, "provider": v.provider,
            "check_id": v.check_id, "country": v.country,
            "birth_date": v.birth_date.isoformat() if v.birth_date else None,
            "cash_out_allowed": v.cash_out_allowed,
            "history": [{**h, "at": h["at"].isoformat()} for h in history]}
