"""The one table from bridge errors to HTTP status, and the JSON error body."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway_bridge.shared import errors

STATUS_BY_ERROR: dict[type[errors.BridgeError], int] = {
    errors.InvalidRequest: 400,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Refused: 422,
    errors.UpstreamDeclined: 502,
    errors.Unavailable: 503,
}
# Webhook rejections by cause (psp.base.WebhookRejected): (status, code).
WEBHOOK_REJECTIONS: dict[str, tuple[int, str]] = {
    "unsigned": (401, "WEBHOOK_UNSIGNED"),
    "signature": (401, "WEBHOOK_SIGNATURE_INVALID"),
    "stale": (401, "WEBHOOK_STALE"),
    "malformed": (400, "WEBHOOK_MALFORMED"),
}


def response(status: int, code: str, message: str, *, request_id: str,
             field: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    error: dict[str, str] = {"code": code, "message": message, "request_id": request_id}
    if field:
        error["field"] = field
    return web.json_response({"error": error}, status=status, headers=headers,
                             dumps=dumps)


def from_bridge_error(err: errors.BridgeError, *, request_id: str) -> web.Response:
    status = next(s for cls, s in STATUS_BY_ERROR.items() if isinstance(err, cls))
    headers = {"Retry-After": str(err.retry_after_s)} if err.retry_after_s else None
    return response(status, err.code, err.message, request_id=request_id, field=err.field,
                    headers=headers)


def dumps(value: object) -> str:
    return orjson.dumps(value).decode()
