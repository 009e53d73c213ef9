"""The simulator's own control API under `/_sim` (JSON in, JSON out), for tests and the demo.

    POST /_sim/deposits/{psp}/{psp_reference}/complete   {"outcome", "amount_minor"?,
                                                         "currency"?, "paid_fraction"?}
    POST /_sim/payouts/{psp}/{psp_reference}/complete    {"outcome": paid|failed|reversed}
    POST /_sim/deposits/{psp}/{psp_reference}/chargeback {"amount_minor"?}
    GET  /_sim/objects/{psp}/{psp_reference}             one object and its API view
    GET  /_sim/objects?psp=&limit=                       the newest objects
    GET  /_sim/deliveries?psp=&limit=                    webhook delivery log
    GET  /_sim/requests?psp=&limit=                      PSP API request log
    GET  /_sim/knobs, POST /_sim/knobs                   read / change knobs (partial JSON)
    POST /_sim/flush                                     wait until no webhook is pending
    POST /_sim/reset                                     knobs to start values, memory cleared

The completion endpoints answer `{"events": [{psp, event_key, type, url}], "deliveries": n,
"dropped": n}`: the events a real PSP would send, in the order they were queued (after the
`reorder` knob), plus how many deliveries (duplicates included) were queued or dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from psp_simulator.config import Knobs
from psp_simulator.state import (
    ControlError,
    DepositOutcome,
    SimObject,
    Simulator,
    json_response,
)

# Log and listing answers are capped: a test wants the recent tail, not 10,000 rows.
LIST_LIMIT_DEFAULT = 200
LIST_LIMIT_MAX = 10_000
CONTROL_BODY_MAX_BYTES = 64 * 1024


async def _body(request: web.Request) -> dict[str, object]:
    raw = await request.read()
    if not raw:
        return {}
    if len(raw) > CONTROL_BODY_MAX_BYTES:
        raise ControlError(413, "body too large")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ControlError(400, "body must be JSON") from None
    if not isinstance(body, dict):
        raise ControlError(400, "body must be a JSON object")
    return body


def _optional_int(body: dict[str, object], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ControlError(400, f"{key}: a non-negative integer")
    return value


def _optional_text(body: dict[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ControlError(400, f"{key}: a non-empty string")
    return value


def _fraction(body: dict[str, object]) -> Decimal:
    value = body.get("paid_fraction", "0.5")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ControlError(400, "paid_fraction: a decimal string such as \"0.5\"")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ControlError(400, "paid_fraction: a decimal string such as \"0.5\"") from None


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(LIST_LIMIT_DEFAULT))
    if not raw.isdigit():
        raise ControlError(400, "limit: a positive integer")
    return max(1, min(int(raw), LIST_LIMIT_MAX))


def _tail(rows: Iterable[dict[str, object]], request: web.Request) -> list[dict[str, object]]:
    """The newest `limit` rows (oldest first), optionally for one psp."""
    psp = request.query.get("psp")
    matching = [row for row in rows if psp is None or row.get("psp") == psp]
    return matching[-_limit(request):]


# A knob schedule's bounds: steps, and how far ahead one may be.
SCHEDULE_STEPS_MAX = 100
SCHEDULE_AFTER_MAX_MS = 24 * 3_600_000


class Control:
    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/_sim/deposits/{psp}/{ref}/complete", self.complete_deposit),
            web.post("/_sim/payouts/{psp}/{ref}/complete", self.complete_payout),
            web.post("/_sim/deposits/{psp}/{ref}/chargeback", self.chargeback),
            web.get("/_sim/objects/{psp}/{ref}", self.get_object),
            web.get("/_sim/objects", self.list_objects),
            web.get("/_sim/deliveries", self.deliveries),
            web.get("/_sim/requests", self.requests),
            web.get("/_sim/knobs", self.get_knobs),
            web.post("/_sim/knobs", self.set_knobs),
            web.post("/_sim/schedule", self.schedule),
            web.post("/_sim/flush", self.flush),
            web.post("/_sim/reset", self.reset),
        ]

    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """ControlError -> JSON {"error": message} with its status, for /_sim only."""
        try:
            return await handler(request)
        except ControlError as exc:
            if not request.path.startswith("/_sim/"):
                raise
            return json_response(exc.status, {"error": exc.message})

    def _object(self, request: web.Request) -> SimObject:
        psp = request.match_info["psp"]
        if psp not in self._sim.psps:
            raise ControlError(404, f"unknown psp {psp!r}; one of {sorted(self._sim.psps)}")
        return self._sim.get(psp, request.match_info["ref"])

    def _describe(self, obj: SimObject) -> dict[str, object]:
        return {"psp": obj.psp, "kind": obj.kind, "psp_reference": obj.psp_reference,
                "payment_id": obj.payment_id, "amount_minor": obj.amount_minor,
                "currency": obj.currency, "status": obj.status, "webhook_url": obj.webhook_url,
                "created_s": obj.created_s}

    async def complete_deposit(self, request: web.Request) -> web.Response:
        body = await _body(request)
        outcome = DepositOutcome(
            outcome=str(body.get("outcome", "succeeded")),
            amount_minor=_optional_int(body, "amount_minor"),
            currency=_optional_text(body, "currency"), paid_fraction=_fraction(body))
        return json_response(200, self._sim.complete_deposit(self._object(request), outcome))

    async def complete_payout(self, request: web.Request) -> web.Response:
        body = await _body(request)
        outcome = str(body.get("outcome", "paid"))
        return json_response(200, self._sim.complete_payout(self._object(request), outcome))

    async def chargeback(self, request: web.Request) -> web.Response:
        body = await _body(request)
        amount_minor = _optional_int(body, "amount_minor")
        return json_response(200, self._sim.chargeback(self._object(request), amount_minor))

    async def get_object(self, request: web.Request) -> web.Response:
        obj = self._object(request)
        return json_response(200, {**self._describe(obj),
                                   "api": self._sim.psps[obj.psp].view(obj)})

    async def list_objects(self, request: web.Request) -> web.Response:
        newest = itertools.islice(reversed(self._sim.objects.values()), LIST_LIMIT_MAX)
        rows = reversed([self._describe(obj) for obj in newest])
        return json_response(200, {"count": len(self._sim.objects),
                                   "objects": _tail(rows, request)})

    async def deliveries(self, request: web.Request) -> web.Response:
        return json_response(200, {"outstanding": self._sim.deliverer.outstanding,
                                   "deliveries": _tail(self._sim.deliverer.log, request)})

    async def requests(self, request: web.Request) -> web.Response:
        return json_response(200, {"requests": _tail(self._sim.requests, request)})

    async def get_knobs(self, request: web.Request) -> web.Response:
        del request
        return json_response(200, self._sim.knobs.as_json())

    async def set_knobs(self, request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            self._sim.knobs = self._sim.knobs.updated(body)
        except ValueError as exc:
            raise ControlError(400, str(exc)) from None
        return json_response(200, self._sim.knobs.as_json())

    async def schedule(self, request: web.Request) -> web.Response:
        """Knob changes over time, for markets that drift (a PSP that degrades, then
        recovers): {"steps": [{"after_ms": 5000, "knobs": {...}}, ...]}, each `after_ms` from
        now. Every step is checked before any is applied; a new schedule (or a reset)
        replaces the one running."""
        body = await _body(request)
        steps = body.get("steps")
        if not isinstance(steps, list) or not 0 < len(steps) <= SCHEDULE_STEPS_MAX:
            raise ControlError(400, f"steps: a list of 1..{SCHEDULE_STEPS_MAX} steps")
        planned: list[tuple[int, Knobs]] = []
        knobs = self._sim.knobs
        for i, step in enumerate(steps):
            if not isinstance(step, dict) or not isinstance(step.get("knobs"), dict):
                raise ControlError(400, f"steps[{i}]: an object with after_ms and knobs")
            after_ms = _optional_int(step, "after_ms") or 0
            if after_ms > SCHEDULE_AFTER_MAX_MS:
                raise ControlError(400, f"steps[{i}].after_ms: at most {SCHEDULE_AFTER_MAX_MS}")
            try:
                knobs = knobs.updated(step["knobs"])
            except ValueError as exc:
                raise ControlError(400, f"steps[{i}].knobs: {exc}") from None
            planned.append((after_ms, knobs))
        self._sim.run_schedule(sorted(planned, key=lambda p: p[0]))
        return json_response(200, {"steps": len(planned)})

    async def flush(self, request: web.Request) -> web.Response:
        body = await _body(request)
        timeout_ms = _optional_int(body, "timeout_ms") or self._sim.settings.flush_timeout_ms
        timeout_ms = min(timeout_ms, self._sim.settings.flush_timeout_ms)
        flushed = await self._sim.deliverer.flush(timeout_ms)
        return json_response(200 if flushed else 504, {
            "flushed": flushed, "outstanding": self._sim.deliverer.outstanding})

    async def reset(self, request: web.Request) -> web.Response:
        del request
        self._sim.reset()
        return json_response(200, self._sim.knobs.as_json())
