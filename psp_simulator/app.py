"""The simulator's server: one aiohttp app speaking Stripe under `/stripe`, Adyen under
`/adyen` and NOWPayments under `/nowpayments`, an FX rates provider under `/fx/rates`
(simulator.fx_api), plus the `/_sim` control API.

Every PSP API call passes the same gate, in the order a real outage would show it: `down`
(503), the API key (401), `error_rate` (500), then idempotency: a POST with an
`Idempotency-Key` seen before with the same method, path and body gets the stored answer
again (no second object); with a different body, the PSP's own idempotency error. Answers
(errors included) are delayed by `latency_ms` after the work is done, so a client that
times out has still created the object, exactly the case idempotency keys exist for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from psp_simulator.adyen_api import AdyenSim
from psp_simulator.config import SimSettings, problems
from psp_simulator.control import Control
from psp_simulator.fx_api import FxSim
from psp_simulator.nowpayments_api import NowPaymentsSim
from psp_simulator.onfido_api import OnfidoSim
from psp_simulator.reports import routes as report_routes
from psp_simulator.state import SimPsp, Simulator, StoredAnswer
from psp_simulator.stripe_api import StripeSim

log = logging.getLogger(__name__)

# PSP request bodies are small; aiohttp refuses bigger ones with 413 before any handler.
REQUEST_BODY_MAX_BYTES = 1024 * 1024
SHUTDOWN_GRACE_S = 5.0


def _fingerprint(request: web.Request, body: bytes) -> bytes:
    return hashlib.sha256(f"{request.method} {request.path}\n".encode() + body).digest()


async def _answer(sim: Simulator, psp: SimPsp, request: web.Request,
                  handler: Handler) -> web.StreamResponse:
    knobs = sim.knobs
    if knobs.down or psp.name in knobs.down_psps:
        return psp.error(503, "service_unavailable", "The service is temporarily unavailable")
    if not psp.authorized(request):
        return psp.error(401, "", "Invalid API key provided")
    if sim.roll(knobs.error_rate):
        return psp.error(500, "internal_error", "An unexpected error occurred")
    key = request.headers.get("Idempotency-Key", "")
    if request.method != "POST" or not key:
        return await handler(request)
    fingerprint = _fingerprint(request, await request.read())
    slot = (psp.name, key)
    if slot in sim.idempotency:
        stored = sim.idempotency[slot]
        if stored is None:
            return psp.error(409, "idempotency_key_in_use",
                             "A request with this Idempotency-Key is still in progress")
        if stored.fingerprint != fingerprint:
            return psp.idempotency_mismatch(key)
        return web.Response(status=stored.status, body=stored.body,
                            content_type=stored.content_type,
                            headers={"Idempotent-Replayed": "true"})
    sim.remember(slot, None)
    stored_answer: StoredAnswer | None = None
    try:
        work_ms = knobs.work_ms_by_psp.get(psp.name, 0)
        if work_ms:
            await asyncio.sleep(work_ms / 1000)
        response = await handler(request)
        if (isinstance(response, web.Response) and response.status < 500
                and isinstance(response.body, bytes)):
            stored_answer = StoredAnswer(fingerprint, response.status, response.body,
                                         response.content_type)
    finally:
        if stored_answer is None:
            sim.idempotency.pop(slot, None)  # not executed: a retry may run it afresh
        else:
            sim.remember(slot, stored_answer)
    return response


def _api_gate(sim: Simulator) -> Middleware:
    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        psp = sim.psps.get(request.path.split("/", 2)[1])
        if psp is None:
            return await handler(request)
        try:
            response = await _answer(sim, psp, request, handler)
        except web.HTTPException as exc:  # no such route under this PSP: its own 404/405
            response = psp.error(exc.status, "resource_missing", exc.reason)
        sim.log_request(psp.name, request, response.status)
        latency_ms = sim.knobs.latency_ms_for(psp.name)
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        return response
    return gate


def build_app(sim: Simulator) -> web.Application:
    psps: list[SimPsp] = [StripeSim(sim), AdyenSim(sim), NowPaymentsSim(sim)]
    for psp in psps:
        sim.psps[psp.name] = psp
    fx_rates = FxSim(sim)
    kyc = OnfidoSim(sim)
    control = Control(sim)
    app = web.Application(client_max_size=REQUEST_BODY_MAX_BYTES,
                          middlewares=[control.errors, _api_gate(sim)])
    for psp in sim.psps.values():
        app.add_routes(psp.routes())
    app.add_routes(control.routes())
    app.add_routes(fx_rates.routes())
    app.add_routes(kyc.routes())
    app.add_routes(report_routes(sim))
    return app


def _split_addr(listen_addr: str) -> tuple[str, int]:
    host, _, port = listen_addr.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


@contextlib.asynccontextmanager
async def running(settings: SimSettings) -> AsyncIterator[int]:
    """Serve on the running loop; yields the bound port (listen on port 0 for tests)."""
    found = problems(settings)
    if found:
        raise ValueError("simulator settings: " + "; ".join(found))
    sim = Simulator(settings)
    runner = web.AppRunner(build_app(sim), shutdown_timeout=SHUTDOWN_GRACE_S,
                           access_log=None)
    await runner.setup()
    await sim.start()
    try:
        host, port = _split_addr(settings.listen_addr)
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        log.info("psp simulator serving", extra={"listen": f"{host}:{bound}",
                                                 "webhook_base_url": settings.webhook_base_url})
        yield int(bound)
    finally:
        # The server first (in-flight handlers finish), then the webhook senders.
        await runner.cleanup()
        await sim.stop()


async def run(settings: SimSettings) -> None:
    """The CLI entry: serve until SIGTERM/SIGINT or cancellation."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running(settings):
            await stop.wait()
            log.info("psp simulator shutting down")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
