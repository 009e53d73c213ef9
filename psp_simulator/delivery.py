"""Webhook delivery, the way PSPs do it: at least once, retried with backoff, possibly late,
duplicated, reordered or lost (each on a knob), and logged.

Jobs wait in a bounded queue; `webhook_senders` tasks post them (one sender by default, so
delivery order is the order of submission, which is what `reorder` then perturbs). Every
accepted job is counted in `outstanding` until it is delivered or abandoned, and the count
is capped by `delivery_queue_max`, so delayed jobs and pending retries are bounded too.
Headers are computed per attempt: Stripe re-signs a retried event with a fresh timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from psp_simulator.config import Knobs, SimSettings

log = logging.getLogger(__name__)

# The receiver's answer body is only read to free the connection; its text isn't needed.
RESPONSE_READ_MAX_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Webhook:
    psp: str
    event_key: str
    event_type: str
    url: str
    body: bytes
    # (body, now_s) -> headers for one attempt: signatures live here.
    headers: Callable[[bytes, int], dict[str, str]]

    def describe(self) -> dict[str, object]:
        return {"psp": self.psp, "event_key": self.event_key, "type": self.event_type,
                "url": self.url}


@dataclass(frozen=True, slots=True)
class _Job:
    webhook: Webhook
    attempt: int = 1


class DeliveryQueueFull(Exception):
    """More webhooks are waiting than `delivery_queue_max`: the caller answers 503."""


class Deliverer:
    def __init__(self, settings: SimSettings, *, knobs: Callable[[], Knobs],
                 rng: random.Random) -> None:
        self._settings = settings
        self._knobs = knobs
        self._rng = rng
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=settings.delivery_queue_max)
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._senders: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.log: deque[dict[str, object]] = deque(maxlen=settings.delivery_log_max)

    @property
    def outstanding(self) -> int:
        return self._outstanding

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.webhook_timeout_ms / 1000))
        self._senders = [asyncio.create_task(self._send_loop(), name=f"sim-webhook-sender-{i}")
                         for i in range(self._settings.webhook_senders)]

    async def stop(self) -> None:
        for task in [*self._senders, *self._tasks]:
            task.cancel()
        for task in [*self._senders, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    def submit(self, webhooks: list[Webhook]) -> dict[str, object]:
        """Queue one completion's webhooks, applying reorder, duplicate, drop and delay."""
        knobs = self._knobs()
        batch = list(reversed(webhooks)) if knobs.reorder else list(webhooks)
        # Duplicates come as whole late rounds (a, b, a, b): a redelivered early event
        # then arrives after the later one, which is the case worth testing.
        copies = [w for _ in range(1 + knobs.duplicate_count) for w in batch]
        if self._outstanding + len(copies) > self._settings.delivery_queue_max:
            raise DeliveryQueueFull(f"{self._outstanding} webhooks already waiting")
        jobs: list[_Job] = []
        for webhook in copies:
            if knobs.drop_rate and self._rng.random() < knobs.drop_rate:
                self._record(webhook, attempt=0, status=None, error="dropped")
            else:
                jobs.append(_Job(webhook))
        if jobs:
            self._outstanding += len(jobs)
            self._idle.clear()
            self._enqueue_later(jobs, knobs.delay_ms)
        return {"events": [w.describe() for w in batch], "deliveries": len(jobs),
                "dropped": len(copies) - len(jobs)}

    async def flush(self, timeout_ms: int) -> bool:
        """True once nothing is queued, delayed, in flight or waiting for a retry."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_ms / 1000)
        except TimeoutError:
            return False
        return True

    def _enqueue_later(self, jobs: list[_Job], delay_ms: int) -> None:
        if delay_ms <= 0:
            for job in jobs:
                self._queue.put_nowait(job)  # never full: outstanding <= maxsize
            return
        task = asyncio.create_task(self._enqueue_after(jobs, delay_ms))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _enqueue_after(self, jobs: list[_Job], delay_ms: int) -> None:
        await asyncio.sleep(delay_ms / 1000)
        for job in jobs:
            self._queue.put_nowait(job)

    def _finish(self) -> None:
        self._outstanding -= 1
        if self._outstanding == 0:
            self._idle.set()

    async def _send_loop(self) -> None:
        while True:
            job = await self._queue.get()
            status, error = await self._post(job.webhook)
            self._record(job.webhook, attempt=job.attempt, status=status, error=error)
            if status is not None and 200 <= status < 300:
                self._finish()
            elif job.attempt >= self._settings.webhook_attempts_max:
                log.warning("webhook abandoned", extra={
                    "psp": job.webhook.psp, "event_key": job.webhook.event_key,
                    "attempts": job.attempt})
                self._finish()
            else:
                backoff_ms = self._settings.webhook_retry_backoff_ms * 2 ** (job.attempt - 1)
                self._enqueue_later([_Job(job.webhook, job.attempt + 1)], backoff_ms)

    async def _post(self, webhook: Webhook) -> tuple[int | None, str | None]:
        assert self._session is not None, "start() first"
        headers = webhook.headers(webhook.body, int(time.time()))
        try:
            async with self._session.post(webhook.url, data=webhook.body, headers=headers,
                                          allow_redirects=False) as resp:
                await resp.content.read(RESPONSE_READ_MAX_BYTES)
                return resp.status, None
        except TimeoutError:
            return None, "timeout"
        except aiohttp.ClientError as exc:
            return None, type(exc).__name__

    def _record(self, webhook: Webhook, *, attempt: int, status: int | None,
                error: str | None) -> None:
        self.log.append({"psp": webhook.psp, "event_key": webhook.event_key,
                         "type": webhook.event_type, "url": webhook.url, "attempt": attempt,
                         "status": status, "error": error, "at_ms": int(time.time() * 1000)})
