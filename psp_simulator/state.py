"""The simulator's memory and the moves shared by all three PSPs.

`Simulator` keeps the objects the PSP APIs created (bounded: the oldest goes first), the
idempotency records, a request log, the current knobs and the webhook deliverer. Each PSP
half (`stripe_api`, `adyen_api`, `nowpayments_api`) implements `SimPsp`: its routes, its
auth and error shapes, its JSON views and the webhooks a real PSP would send when a deposit
or payout completes or a chargeback arrives. Completing works the same for every PSP (from
the control endpoints or from auto-completion), so it lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal, Protocol

import orjson
from aiohttp import web

from psp_simulator.config import Knobs, SimSettings
from psp_simulator.delivery import Deliverer, DeliveryQueueFull, Webhook

log = logging.getLogger(__name__)

DEPOSIT_OUTCOMES = frozenset({"succeeded", "failed", "expired", "partial"})
PAYOUT_OUTCOMES = frozenset({"paid", "failed", "reversed"})


class ControlError(Exception):
    """A control request the simulator can't honour (unknown object, impossible outcome)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class SimObject:
    """A deposit or payout as one PSP holds it; `fields` keeps that PSP's own extras."""

    psp: str
    kind: Literal["deposit", "payout"]
    psp_reference: str
    payment_id: str
    amount_minor: int
    currency: str
    status: str
    webhook_url: str
    created_s: int
    fields: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DepositOutcome:
    outcome: str
    amount_minor: int | None = None  # what the webhook claims, to provoke a mismatch
    currency: str | None = None
    paid_fraction: Decimal = Decimal("0.5")


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    fingerprint: bytes
    status: int
    body: bytes
    content_type: str


class SimPsp(Protocol):
    name: str

    def routes(self) -> list[web.RouteDef]: ...

    def authorized(self, request: web.Request) -> bool: ...

    def error(self, status: int, code: str, message: str) -> web.Response: ...

    def idempotency_mismatch(self, key: str) -> web.Response: ...

    def view(self, obj: SimObject) -> dict[str, object]: ...

    def deposit_webhooks(self, obj: SimObject, outcome: DepositOutcome) -> list[Webhook]: ...

    def payout_webhooks(self, obj: SimObject, outcome: str) -> list[Webhook]: ...

    def chargeback_webhooks(self, obj: SimObject, amount_minor: int | None) -> list[Webhook]: ...


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return f"{value:f}"  # control answers only; PSP views that need numbers use js_json
    raise TypeError(f"not JSON: {type(value).__name__}")


def dumps(data: object) -> bytes:
    return orjson.dumps(data, default=_json_default)


def json_response(status: int, data: object) -> web.Response:
    return web.Response(status=status, body=dumps(data), content_type="application/json")


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Simulator:
    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.knobs: Knobs = settings.knobs
        self.rng = random.Random(settings.seed or None)
        self.objects: OrderedDict[tuple[str, str], SimObject] = OrderedDict()
        self.idempotency: OrderedDict[tuple[str, str], StoredAnswer | None] = OrderedDict()
        self.requests: deque[dict[str, object]] = deque(maxlen=settings.request_log_max)
        self.deliverer = Deliverer(settings, knobs=lambda: self.knobs, rng=self.rng)
        self.psps: dict[str, SimPsp] = {}
        self._ids = itertools.count(1)
        self._auto_tasks: set[asyncio.Task[None]] = set()
        self._schedule: asyncio.Task[None] | None = None
        # What else `reset` puts back (the FX rates provider's knobs).
        self.on_reset: list[Callable[[], None]] = []

    # --- ids, objects, rolls --------------------------------------------------------------

    def new_id(self) -> str:
        """Unique within a run (the counter) and unguessable-looking (the random part)."""
        return f"{self.rng.getrandbits(48):012x}{next(self._ids):06d}"

    def new_digits(self, length: int) -> str:
        counter = f"{next(self._ids):06d}"
        head = self.rng.randrange(10 ** (length - len(counter) - 1),
                                  10 ** (length - len(counter)))
        return f"{head}{counter}"

    def add(self, obj: SimObject) -> None:
        self.objects[(obj.psp, obj.psp_reference)] = obj
        while len(self.objects) > self.settings.objects_max:
            self.objects.popitem(last=False)

    def get(self, psp: str, psp_reference: str) -> SimObject:
        obj = self.objects.get((psp, psp_reference))
        if obj is None:
            raise ControlError(404, f"no {psp} object {psp_reference!r}")
        return obj

    def roll(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate

    def charge_decline(self, psp: str, method: str, *, soft: Sequence[str],
                       hard: Sequence[str]) -> str | None:
        """The decline code a card charge at `psp` gets, None when it is approved: the
        forced code when a knob sets one, else a roll against the approval for the method,
        then soft or hard by the PSP's soft share."""
        knobs = self.knobs
        forced = knobs.decline_code_by_psp.get(psp)
        if forced:
            return forced
        if not self.roll(1 - knobs.approval_for(psp, method)):
            return None
        return self.rng.choice(soft if self.roll(knobs.soft_share_for(psp)) else hard)

    def captured(self, psp: str, field_name: str, reference: str) -> SimObject | None:
        """The paid deposit whose capture `psp` knows as `reference` (a refund names it)."""
        for obj in reversed(self.objects.values()):
            if obj.psp == psp and obj.kind == "deposit" \
                    and obj.fields.get(field_name) == reference:
                return obj
        return None

    def remember(self, key: tuple[str, str], answer: StoredAnswer | None) -> None:
        """None marks a request still executing (a concurrent retry gets a 409)."""
        self.idempotency[key] = answer
        while len(self.idempotency) > self.settings.idempotency_keys_max:
            self.idempotency.popitem(last=False)

    def webhook_url(self, psp: str) -> str:
        return f"{self.settings.webhook_base_url.rstrip('/')}/webhooks/{psp}"

    # --- completing ------------------------------------------------------------------------

    def complete_deposit(self, obj: SimObject, outcome: DepositOutcome) -> dict[str, object]:
        if obj.kind != "deposit":
            raise ControlError(409, f"{obj.psp_reference} is a {obj.kind}, not a deposit")
        if outcome.outcome not in DEPOSIT_OUTCOMES:
            raise ControlError(400, f"outcome: one of {sorted(DEPOSIT_OUTCOMES)}")
        return self._submit(self.psps[obj.psp].deposit_webhooks(obj, outcome))

    def complete_payout(self, obj: SimObject, outcome: str) -> dict[str, object]:
        if obj.kind != "payout":
            raise ControlError(409, f"{obj.psp_reference} is a {obj.kind}, not a payout")
        if outcome not in PAYOUT_OUTCOMES:
            raise ControlError(400, f"outcome: one of {sorted(PAYOUT_OUTCOMES)}")
        return self._submit(self.psps[obj.psp].payout_webhooks(obj, outcome))

    def chargeback(self, obj: SimObject, amount_minor: int | None) -> dict[str, object]:
        if obj.kind != "deposit":
            raise ControlError(409, f"{obj.psp_reference} is a {obj.kind}, not a deposit")
        return self._submit(self.psps[obj.psp].chargeback_webhooks(obj, amount_minor))

    def deliver(self, webhooks: list[Webhook]) -> None:
        """Queues what an API call sends by itself; a full queue drops it, as a PSP whose
        endpoint is backed up would (its status API still tells)."""
        try:
            self.deliverer.submit(webhooks)
        except DeliveryQueueFull as exc:
            log.warning("webhooks dropped", extra={"reason": str(exc)})

    def _submit(self, webhooks: list[Webhook]) -> dict[str, object]:
        try:
            return self.deliverer.submit(webhooks)
        except DeliveryQueueFull as exc:
            raise ControlError(503, str(exc)) from None

    def created(self, obj: SimObject, *, doomed: bool = False) -> None:
        """Schedule completion when auto-completion is on, or when a decline roll doomed a
        deposit (it then completes as failed, after the auto delay or at once)."""
        delay_ms = self.knobs.auto_complete_ms
        if not doomed and delay_ms == 0:
            return
        task = asyncio.create_task(self._auto_complete(obj, doomed=doomed, delay_ms=delay_ms))
        self._auto_tasks.add(task)
        task.add_done_callback(self._auto_tasks.discard)

    async def _auto_complete(self, obj: SimObject, *, doomed: bool, delay_ms: int) -> None:
        await asyncio.sleep(delay_ms / 1000)
        wanted = "failed" if doomed else self.knobs.auto_outcome
        try:
            if obj.kind == "deposit":
                outcome = "succeeded" if wanted in ("success", "succeeded", "paid") else wanted
                self.complete_deposit(obj, DepositOutcome(outcome))
            else:
                outcome = "paid" if wanted in ("success", "succeeded", "paid") else "failed"
                self.complete_payout(obj, outcome)
        except ControlError as exc:
            log.warning("auto-completion skipped", extra={
                "psp": obj.psp, "psp_reference": obj.psp_reference, "reason": exc.message})

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.deliverer.start()

    async def stop(self) -> None:
        for task in list(self._auto_tasks):
            task.cancel()
        for task in list(self._auto_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.deliverer.stop()

    def reset(self) -> None:
        """Knobs (and a fixed seed) back to their start values; objects, keys and logs
        forgotten. Ids stay unique: their counter keeps counting."""
        self.knobs = self.settings.knobs
        if self._schedule is not None:
            self._schedule.cancel()
            self._schedule = None
        if self.settings.seed:
            self.rng.seed(self.settings.seed)  # the same rolls again, test after test
        self.objects.clear()
        self.idempotency.clear()
        self.requests.clear()
        self.deliverer.log.clear()
        for reset in self.on_reset:
            reset()

    def run_schedule(self, steps: list[tuple[int, Knobs]]) -> None:
        """Applies each (after_ms, knobs) when its time comes, replacing a running schedule."""
        if self._schedule is not None:
            self._schedule.cancel()

        async def run() -> None:
            started = asyncio.get_running_loop().time()
            for after_ms, knobs in steps:
                delay_s = started + after_ms / 1000 - asyncio.get_running_loop().time()
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
                self.knobs = knobs

        self._schedule = asyncio.create_task(run(), name="knob-schedule")

    def log_request(self, psp: str, request: web.Request, status: int) -> None:
        self.requests.append({
            "psp": psp, "method": request.method, "path": request.path,
            "idempotency_key": request.headers.get("Idempotency-Key"), "status": status,
            "at_ms": int(time.time() * 1000)})
