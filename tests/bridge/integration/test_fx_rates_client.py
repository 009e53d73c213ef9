"""The rates client against a tiny provider on loopback (aiohttp): a body that arrives in
several writes is read whole, one above the size limit is refused (announced or not), and a
provider serving an already-stale table is backed off like a failing one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiohttp import web

from gateway_bridge.fx.rates import RATES_BODY_MAX_BYTES, REFRESH_AFTER_FAILURE_MS, FxRates
from gateway_bridge.shared.errors import FxUnavailable

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def table(*, age_s: float = 0.0, pad: int = 0) -> bytes:
    as_of = datetime.now(UTC) - timedelta(seconds=age_s)
    rates = {"BTC/EUR": "60000", **{f"X{n}/EUR": "1" for n in range(pad)}}
    return orjson.dumps({"source": "stub", "as_of": as_of.isoformat(), "rates": rates})


class Provider:
    """One loopback provider whose handler a test sets; counts requests."""

    def __init__(self) -> None:
        self.requests = 0
        self.handler: Handler | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        assert self.handler is not None
        return await self.handler(request)


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    p = Provider()
    app = web.Application()
    app.router.add_get("/rates", p.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    p.url = f"http://127.0.0.1:{port}/rates"
    yield p
    await runner.cleanup()


@pytest.fixture
async def rates(provider: Provider) -> AsyncIterator[FxRates]:
    client = FxRates(url=provider.url, timeout_ms=2_000, age_max_ms=60_000, spread_bps=150)
    yield client
    await client.close()


async def test_a_body_in_two_writes_with_a_pause_is_read_whole(
        provider: Provider, rates: FxRates) -> None:
    """The JSON comes in two writes 200 ms apart (chunked): both are read, the rate used."""
    body = table()

    async def two_writes(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(body[:20])
        await asyncio.sleep(0.2)
        await response.write(body[20:])
        await response.write_eof()
        return response

    provider.handler = two_writes
    rate = await rates.rate("BTC", "EUR")
    assert (rate.text, rate.source) == ("60000", "stub")


async def test_a_slow_body_with_a_content_length_is_read_whole(
        provider: Provider, rates: FxRates) -> None:
    """Same with a Content-Length and the second half late."""
    body = table()

    async def late_half(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        await asyncio.sleep(0.2)
        await response.write(body[len(body) // 2:])
        await response.write_eof()
        return response

    provider.handler = late_half
    assert (await rates.rate("BTC", "EUR")).text == "60000"


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "chunked"])
async def test_a_body_above_the_limit_is_refused(provider: Provider, rates: FxRates,
                                                 announced: bool) -> None:
    """A valid table padded past RATES_BODY_MAX_BYTES is refused, whether its length was
    announced or it streams in chunks: FX_RATE_UNAVAILABLE, 'too large'."""
    body = table(pad=RATES_BODY_MAX_BYTES // 10)
    assert len(body) > RATES_BODY_MAX_BYTES

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if announced:
            response.content_length = len(body)
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 32 * 1024):
            await response.write(body[start:start + 32 * 1024])
        await response.write_eof()
        return response

    provider.handler = big
    with pytest.raises(FxUnavailable) as err:
        await rates.rate("BTC", "EUR")
    assert err.value.code == "FX_RATE_UNAVAILABLE" and "too large" in err.value.message


async def test_a_provider_serving_a_stale_table_is_backed_off(
        provider: Provider, rates: FxRates) -> None:
    """A table already older than the maximum age on arrival counts as a failure: callers
    within REFRESH_AFTER_FAILURE_MS get FX_RATE_STALE without a new request; after it, one
    new request is made."""
    async def stale(request: web.Request) -> web.StreamResponse:
        return web.Response(body=table(age_s=120), content_type="application/json")

    provider.handler = stale
    for _ in range(5):
        with pytest.raises(FxUnavailable) as err:
            await rates.rate("BTC", "EUR")
        assert err.value.code == "FX_RATE_STALE"
    assert provider.requests == 1
    await asyncio.sleep(REFRESH_AFTER_FAILURE_MS / 1000 + 0.1)
    with pytest.raises(FxUnavailable):
        await rates.rate("BTC", "EUR")
    assert provider.requests == 2

    async def fresh(request: web.Request) -> web.StreamResponse:
        return web.Response(body=table(), content_type="application/json")

    provider.handler = fresh
    await asyncio.sleep(REFRESH_AFTER_FAILURE_MS / 1000 + 0.1)
    assert (await rates.rate("BTC", "EUR")).text == "60000"
    assert (await rates.rate("BTC", "EUR")).text == "60000"
    assert provider.requests == 3
