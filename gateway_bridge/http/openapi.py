"""The bridge's HTTP contract, served: `GET /openapi.json` answers the OpenAPI 3.1 document
kept next to this module (openapi.json, hand-written: it is the contract, not generated from
the code).

It is read and parsed once, when the application is built, so a broken file stops the start
rather than a request, and nothing is read at import or per request. The tests hold the
document to the code both ways: the routes registered equal the operations described, and
every request and answer the contract tests make is validated against it
(tests/bridge/integration/test_openapi.py).
"""

from __future__ import annotations

from importlib import resources

import orjson
from aiohttp import web

DOCUMENT_FILE = "openapi.json"
DOCUMENT = web.AppKey("openapi_document", bytes)


def load() -> bytes:
    """The document as compact JSON; raises if the packaged file is missing or not JSON."""
    raw = resources.files("gateway_bridge.http").joinpath(DOCUMENT_FILE).read_bytes()
    return orjson.dumps(orjson.loads(raw))


async def document(request: web.Request) -> web.Response:
    return web.Response(body=request.app[DOCUMENT], content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Serves the contract without authentication: it holds no secret, and a client needs
    it before it has a key."""
    app[DOCUMENT] = load()
    app.router.add_get("/openapi.json", document)
