"""The bridge's HTTP contract in the tests: an exchange (the request a test sent, the answer it
got) checked against gateway_bridge/http/openapi.json with openapi-core.

    ContractClient(http, base_url).call(...)   send a request, check the exchange, return it
    check_exchange(request, answer)            the same check for an exchange made elsewhere
    SentRequest.of(...), Answer(...)           openapi-core's request and response protocols,
                                               built from what went over the wire
    documented_operations() / registered_operations(app)
                                               (METHOD, path template) pairs, to compare

Both halves count. The answer must be one the contract declares for that operation and
status, in shape (an undeclared status fails too). The request must be valid; or, when a test
sends a deliberately bad one (`request_valid=False`), invalid: the contract must refuse what
the bridge refused, so the two cannot drift apart in either direction.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import PathError
from yarl import URL

from gateway_bridge.http import openapi as http_openapi

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch",
                          "trace"})


@functools.cache
def document() -> dict[str, Any]:
    """The packaged document, exactly as the bridge serves it (parsed once per session)."""
    loaded: dict[str, Any] = orjson.loads(http_openapi.load())
    return loaded


@functools.cache
def contract() -> OpenAPI:
    """openapi-core's view of the document: what validates requests and answers."""
    return OpenAPI.from_dict(document())


def documented_operations() -> set[tuple[str, str]]:
    """(METHOD, path template) of every operation in the document."""
    return {(method.upper(), path) for path, item in document()["paths"].items()
            for method in item if method in HTTP_METHODS}


def registered_operations(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route of the application, leaving out the HEAD
    route aiohttp adds beside each GET (add_get's allow_head)."""
    routes = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.resource is not None}
    return {(method, path) for method, path in routes
            if not (method == "HEAD" and ("GET", path) in routes)}


@dataclass(frozen=True, slots=True)
class SentRequest:
    """openapi_core.protocols.Request for a request a test sent over HTTP."""

    host_url: str
    path: str
    method: str  # lower case, as openapi-core compares it
    body: bytes | None
    content_type: str
    parameters: RequestParameters

    @classmethod
    def of(cls, method: str, url: str, *, headers: Mapping[str, str],
           body: bytes | None) -> SentRequest:
        parsed = URL(url)
        sent = CIMultiDictProxy(CIMultiDict(headers))
        content_type = sent.get("Content-Type", "").partition(";")[0].strip()
        return cls(host_url=f"{parsed.scheme}://{parsed.host}:{parsed.port}",
                   path=parsed.path, method=method.lower(), body=body,
                   content_type=content_type,
                   parameters=RequestParameters(query=MultiDict(parsed.query), header=sent,
                                                cookie=MultiDict()))


@dataclass(frozen=True, slots=True)
class Answer:
    """openapi_core.protocols.Response for an answer a test got."""

    status_code: int
    content_type: str
    headers: Mapping[str, str]
    data: bytes

    def json(self) -> Any:
        return orjson.loads(self.data) if self.content_type == "application/json" else None


def _describe(errors: Iterable[Exception]) -> list[str]:
    """Each error with the schema errors openapi-core keeps on its cause."""
    lines = []
    for err in errors:
        lines.append(f"{type(err).__name__}: {err}")
        cause = err.__cause__
        for schema_error in getattr(cause, "schema_errors", ()) or ():
            path = "/".join(str(p) for p in schema_error.absolute_path)
            lines.append(f"    at /{path}: {schema_error.message}")
    return lines


def request_errors(request: SentRequest) -> list[Exception]:
    return list(contract().iter_request_errors(request))


def answer_errors(request: SentRequest, answer: Answer) -> list[Exception]:
    return list(contract().iter_response_errors(request, answer))


def check_exchange(request: SentRequest, answer: Answer, *, request_valid: bool = True) -> None:
    """AssertionError unless the answer matches the contract for this request, and the
    request is valid (or, with request_valid=False, invalid for a reason other than an
    unknown path or method: a route the contract does not have is never "a bad request")."""
    where = f"{request.method.upper()} {request.path} -> {answer.status_code}"
    wrong_answer = answer_errors(request, answer)
    assert not wrong_answer, (f"{where}: the answer breaks the contract:\n"
                              + "\n".join(_describe(wrong_answer))
                              + f"\nbody: {answer.data[:2000]!r}")
    wrong_request = request_errors(request)
    if request_valid:
        assert not wrong_request, (f"{where}: the request breaks the contract:\n"
                                   + "\n".join(_describe(wrong_request)))
        return
    unknown = [e for e in wrong_request if isinstance(e, PathError)]
    assert not unknown, f"{where}: not in the contract: {_describe(unknown)}"
    assert wrong_request, (f"{where}: the bridge refused this request, the contract accepts "
                           "it: one of them is wrong")


@dataclass
class ContractClient:
    """Requests to a running bridge, each exchange checked with check_exchange."""

    http: aiohttp.ClientSession
    base_url: str
    headers: dict[str, str] = field(default_factory=dict)  # sent with each call (the key)

    async def call(self, method: str, path: str, *, json: Any = None, data: bytes | None = None,
                   headers: Mapping[str, str] | None = None, auth: bool = True,
                   request_valid: bool = True) -> Answer:
        """`json`: a body to send as application/json; `data`: raw bytes, sent as they are
        (Content-Type from `headers`). `auth=False` leaves out the default headers."""
        sent = {**(self.headers if auth else {}), **(headers or {})}
        body = data
        if json is not None:
            body = orjson.dumps(json)
            sent.setdefault("Content-Type", "application/json")
        url = self.base_url + path
        async with self.http.request(method, url, data=body, headers=sent) as r:
            answer = Answer(status_code=r.status, content_type=r.content_type,
                            headers=CIMultiDictProxy(CIMultiDict(r.headers)),
                            data=await r.read())
            # The headers as sent, with those aiohttp added (a default Content-Type, ...).
            request = SentRequest.of(method, url, headers=r.request_info.headers, body=body)
        check_exchange(request, answer, request_valid=request_valid)
        return answer
