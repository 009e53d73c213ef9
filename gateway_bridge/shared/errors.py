"""Errors the bridge answers with, each with a stable `code` the cashier branches on.

    BridgeError            base; never raised itself
    ├── InvalidRequest     a field is missing or malformed (names the field)      -> 400
    ├── Unauthenticated    no or unknown API key                                  -> 401
    ├── NotFound           no such payment / route                                -> 404
    ├── Conflict           Idempotency-Key reused with a different request        -> 409
    ├── Refused            the wallet or a rule refuses (insufficient funds, ...) -> 422
    │   └── FxRefused      paying in another currency is not possible: FX off,   -> 422
    │                      the pair not quoted, or worth less than a minor unit
    ├── UpstreamDeclined   the PSP refused our request                            -> 502
    └── Unavailable        PSP breaker open, PSP or wallet unreachable: retry     -> 503
        │                  with the same Idempotency-Key
        └── FxUnavailable  no fresh FX rate: FX_RATE_STALE (the provider's rate   -> 503
                           is older than the maximum age) or FX_RATE_UNAVAILABLE
                           (the provider did not answer); Retry-After

The HTTP status table lives at the edge (gateway_bridge.http.errors). Anything that is not a
BridgeError is a bug: HTTP 500 with a request id, never exception text.
"""

from __future__ import annotations


class BridgeError(Exception):
    code = "ERROR"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None,
                 retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field
        self.retry_after_s = retry_after_s


class InvalidRequest(BridgeError):
    code = "FIELD_INVALID"

    def __init__(self, field: str, problem: str, *, code: str | None = None) -> None:
        super().__init__(f"{field}: {problem}", code=code, field=field)


class Unauthenticated(BridgeError):
    code = "UNAUTHENTICATED"


class Forbidden(BridgeError):
    """A valid key whose client may not do this (unlike Unauthenticated: no new key helps)."""

    code = "FORBIDDEN"


class NotFound(BridgeError):
    code = "NOT_FOUND"


class Conflict(BridgeError):
    code = "IDEMPOTENCY_KEY_REUSED"


class Refused(BridgeError):
    code = "REFUSED"


class UpstreamDeclined(BridgeError):
    code = "PSP_DECLINED"


class Unavailable(BridgeError):
    code = "UNAVAILABLE"


class FxRefused(Refused):
    """FX_NOT_ENABLED, FX_PAIR_UNSUPPORTED, FX_AMOUNT_TOO_SMALL."""

    code = "FX_PAIR_UNSUPPORTED"


class FxUnavailable(Unavailable):
    """FX_RATE_STALE or FX_RATE_UNAVAILABLE; the message names the pair."""

    code = "FX_RATE_UNAVAILABLE"
