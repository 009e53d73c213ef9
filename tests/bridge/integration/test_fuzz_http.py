"""The bridge's HTTP edge under fuzzed input: cashier bodies whose fields take any JSON type
and value, odd Idempotency-Key headers, raw requests with control characters and folded or
duplicated headers. Every answer is a 2xx or a JSON 4xx, never a 5xx, and payments are stored
only for the requests that were answered 2xx."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_bridge.server import Running as BridgeRunning
from tests.bridge.conftest import API_KEY, Cashier
from tests.bridge.integration.test_webhooks_and_api import GOOD

EXAMPLES = 150
JSON_ANY = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6)
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300)


@st.composite
def deposit_bodies(draw: st.DrawFn) -> Any:
    """A valid deposit with some fields replaced by anything, dropped, or added."""
    body: dict[str, Any] = dict(GOOD)
    for name in list(body):
        roll = draw(st.integers(0, 5))
        if roll == 0:
            del body[name]
        elif roll == 1:
            body[name] = draw(JSON_ANY)
    if draw(st.booleans()):
        body[draw(st.text(max_size=10))] = draw(JSON_ANY)
    return body if draw(st.integers(0, 9)) else draw(JSON_ANY)


@pytest.mark.slow
async def test_fuzzed_cashier_requests_get_4xx_and_store_nothing(
        bridge: BridgeRunning, cashier: Cashier, bridge_conn: asyncpg.Connection,
        player: str) -> None:
    """150 fuzzed deposit requests: 2xx or a JSON 4xx with an error code, never 5xx; the
    payments table grows only by the 2xx answers."""
    loop = asyncio.get_running_loop()
    before = await bridge_conn.fetchval("SELECT count(*) FROM bridge.payments")
    created: set[str] = set()
    statuses: dict[int, int] = {}

    def send(body: Any, idem: str) -> None:
        if isinstance(body, dict) and body.get("player_id") == GOOD["player_id"]:
            body["player_id"] = player
        future = asyncio.run_coroutine_threadsafe(cashier.request(
            "POST", "/v1/deposits", body=body, headers={"Idempotency-Key": idem}), loop)
        status, answer = future.result(timeout=30)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (status, answer, body)
        if status >= 400:
            assert answer["error"]["code"], answer
        else:
            created.add(answer["id"])

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(deposit_bodies(), HEADER_TEXT)
    def fuzz(body: Any, idem: str) -> None:
        send(body, idem)

    await asyncio.to_thread(fuzz)
    assert statuses.get(400, 0) > 10, statuses
    after = await bridge_conn.fetchval("SELECT count(*) FROM bridge.payments")
    assert after - before == len(created), statuses


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


@pytest.mark.parametrize("headers", [
    b"Idempotency-Key: a\rb\r\n",                      # bare CR inside a value
    b"Idempotency-Key: a\x00b\r\n",                    # NUL
    b"Idempotency-Key: a\r\n b\r\n",                   # obsolete line folding
    b"Content-Length: 5\r\nContent-Length: 7\r\n",     # conflicting lengths (smuggling)
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"X-Injected\r\n",                                 # header without a colon
])
async def test_header_injection_is_refused_and_stores_nothing(
        headers: bytes, bridge: BridgeRunning, bridge_conn: asyncpg.Connection) -> None:
    """Malformed or smuggling-shaped headers on a cashier POST: a 4xx, no payment stored."""
    before = await bridge_conn.fetchval("SELECT count(*) FROM bridge.payments")
    body = b'{"player_id":"p-raw","amount_minor":1000,"currency":"USD","psp":"stripe",' \
           b'"method":"card"}'
    request = (b"POST /v1/deposits HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
               b"Content-Type: application/json\r\n" + headers)
    if b"Content-Length" not in headers:
        request += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    request += b"Connection: close\r\n\r\n" + body
    answer = await asyncio.to_thread(_raw, bridge.port, request)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 400
    assert 400 <= status < 500, answer[:200]
    assert await bridge_conn.fetchval("SELECT count(*) FROM bridge.payments") == before
