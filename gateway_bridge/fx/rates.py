"""FX rates for converted deposits: fetched from a configured provider, cached, and refused
when too old (docs/FX.md).

The provider answers `GET <BRIDGE_FX_RATES_URL>` with

    {"source": "<name>", "as_of": "<ISO 8601 time>", "rates": {"BTC/EUR": "60185.19", ...}}

a rate being units of the quote currency per 1 unit of the base, as a decimal string (a JSON
number would pass through a float; it is refused). The table is cached; its age is judged by
the provider's `as_of`, not by when we fetched it, so a provider that keeps serving an old
table is noticed. A table older than BRIDGE_FX_RATE_AGE_MAX_MS is refreshed first; one
refresh runs at a time (callers arriving meanwhile wait for it, so a burst of deposits makes
one request). After a failed refresh (no usable answer, or a table already older than the
maximum age when it arrives) the next attempt waits REFRESH_AFTER_FAILURE_MS, so a failing
provider is not hammered by every deposit and inbox retry. The body is read whole, in as many
chunks as it comes, up to RATES_BODY_MAX_BYTES.

Refusals (gateway_bridge.shared.errors): FX_RATE_STALE and FX_RATE_UNAVAILABLE are 503 with
Retry-After at the cashier and a deferred, retried inbox event at credit time;
FX_PAIR_UNSUPPORTED (the provider does not quote the pair) is 422.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction

import aiohttp
import orjson

from gateway_bridge.shared.errors import FxRefused, FxUnavailable
from service_kit import fx

log = logging.getLogger("gateway_bridge.fx.rates")

# A rates table is a few KiB; anything much larger is not one.
RATES_BODY_MAX_BYTES = 256 * 1024
# The body is gathered in reads of at most this much (a memory bound per read, not a limit).
RATES_READ_CHUNK_BYTES = 64 * 1024
RATES_PAIRS_MAX = 10_000
# A provider whose as_of is ahead of our clock by more than this has a broken clock: its
# rates would look fresh forever.
CLOCK_AHEAD_MAX_MS = 5_000
# After a failed fetch, callers get FX_RATE_UNAVAILABLE without a new request for this long.
REFRESH_AFTER_FAILURE_MS = 500
# The source is recorded in the wallet journal, which takes identifier-shaped names.
_SOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,63}")
# What Retry-After says when no fresh rate is at hand: providers refresh every few seconds.
RETRY_AFTER_S = 2


@dataclass(frozen=True, slots=True)
class Rate:
    """One pair's rate as the provider gave it."""

    pair: str          # "BTC/EUR": EUR per 1 BTC
    text: str          # the provider's decimal string, recorded as is
    value: Fraction
    source: str
    as_of: datetime


@dataclass(frozen=True, slots=True)
class _Table:
    rates: dict[str, str]
    source: str
    as_of: datetime


class ProviderError(Exception):
    """The provider did not give a usable table (network, status, shape)."""


class FxRates:
    """The rates client; `enabled` is False when no provider is configured (FX off)."""

    def __init__(self, *, url: str, timeout_ms: int, age_max_ms: int, spread_bps: int,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.url = url
        self.spread_bps = fx.check_spread(spread_bps)
        self.age_max_ms = age_max_ms
        self._timeout_ms = timeout_ms
        self._clock = clock
        self._table: _Table | None = None
        self._refreshing: asyncio.Task[_Table] | None = None
        self._failed_at: datetime | None = None
        self._failure = ""
        # The last failure was a stale table (kept in _table), not a missing answer.
        self._failed_stale = False
        self._http: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None

    def age_ms(self) -> int | None:
        """The cached table's age by its as_of (for the metrics gauge); None: no table."""
        return None if self._table is None else self._age_ms(self._table)

    def _age_ms(self, table: _Table) -> int:
        return max(0, int((self._clock() - table.as_of).total_seconds() * 1000))

    async def rate(self, paid_currency: str, wallet_currency: str) -> Rate:
        """A fresh rate for paying in `paid_currency` into a `wallet_currency` wallet, or
        FxUnavailable (stale, provider down) / FxRefused (pair not quoted)."""
        pair = f"{paid_currency}/{wallet_currency}"
        if not self.enabled:
            raise FxRefused(f"currency: paying in {paid_currency} into a {wallet_currency} "
                            "wallet needs currency conversion, which is not enabled",
                            code="FX_NOT_ENABLED", field="wallet_currency")
        table = self._table
        if table is None or self._age_ms(table) > self.age_max_ms:
            table = await self._refreshed(pair)
        text = table.rates.get(pair)
        if text is None:
            raise FxRefused(f"wallet_currency: no {pair} rate is quoted by {table.source}; "
                            "pay in the wallet's currency or another supported one",
                            code="FX_PAIR_UNSUPPORTED", field="wallet_currency")
        age_ms = self._age_ms(table)
        if age_ms > self.age_max_ms:
            raise FxUnavailable(f"the {pair} rate from {table.source} is {age_ms} ms old, "
                                f"above the maximum of {self.age_max_ms} ms; retry later",
                                code="FX_RATE_STALE", field="wallet_currency",
                                retry_after_s=RETRY_AFTER_S)
        try:
            value = fx.parse_rate(text, field=f"rates[{pair}]")
        except fx.FxError as err:
            raise FxUnavailable(f"the {pair} rate from {table.source} is unusable ({err})",
                                code="FX_RATE_UNAVAILABLE", field="wallet_currency",
                                retry_after_s=RETRY_AFTER_S) from None
        return Rate(pair=pair, text=text, value=value, source=table.source, as_of=table.as_of)

    async def _refreshed(self, pair: str) -> _Table:
        """The table after one refresh (shared by concurrent callers); FxUnavailable when
        the provider failed now or just before."""
        now = self._clock()
        if self._failed_at is not None and self._refreshing is None and \
                (now - self._failed_at).total_seconds() * 1000 < REFRESH_AFTER_FAILURE_MS:
            if self._failed_stale and self._table is not None:
                return self._table  # rate() refuses it as FX_RATE_STALE
            raise self._unavailable(pair)
        if self._refreshing is None:
            self._refreshing = asyncio.create_task(self._fetch(), name="fx-rates-refresh")
        task = self._refreshing
        try:
            # shield: one caller's cancelled request must not cancel everybody's refresh
            table = await asyncio.shield(task)
        except ProviderError:
            raise self._unavailable(pair) from None
        finally:
            if task.done() and self._refreshing is task:
                self._refreshing = None
        return table

    def _unavailable(self, pair: str) -> FxUnavailable:
        return FxUnavailable(f"no fresh {pair} rate: the rates provider failed "
                             f"({self._failure}); retry later", code="FX_RATE_UNAVAILABLE",
                             field="wallet_currency", retry_after_s=RETRY_AFTER_S)

    async def _fetch(self) -> _Table:
        try:
            table = self._parse(await self._get())
        except ProviderError as err:
            self._failed_at, self._failure = self._clock(), str(err)
            self._failed_stale = False
            log.warning("fx rates refresh failed", extra={"error": str(err)})
            raise
        self._table = table
        age_ms = self._age_ms(table)
        if age_ms > self.age_max_ms:
            # A table already too old on arrival is a failing provider too: without the
            # back-off every caller would fetch it again at once. Callers meanwhile are
            # answered from it (FX_RATE_STALE with its age), as this caller is.
            self._failed_at, self._failed_stale = self._clock(), True
            self._failure = f"its table is {age_ms} ms old"
            log.warning("fx rates provider serves a stale table", extra={"age_ms": age_ms})
            return table
        self._failed_at, self._failure, self._failed_stale = None, "", False
        return table

    async def _get(self) -> bytes:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_ms / 1000))
        try:
            async with self._http.get(self.url, headers={"Accept": "application/json"}) as r:
                if r.status != 200:
                    raise ProviderError(f"HTTP {r.status}")
                return await self._body(r)
        except TimeoutError:
            raise ProviderError(f"no answer within {self._timeout_ms} ms") from None
        except aiohttp.ClientError as err:
            raise ProviderError(f"request failed: {type(err).__name__}") from None

    @staticmethod
    async def _body(r: aiohttp.ClientResponse) -> bytes:
        """The whole body, however many chunks it comes in (TLS records, chunked encoding,
        a slow provider), up to RATES_BODY_MAX_BYTES: refused as soon as it says or shows it
        is larger. (content.read(n) returns only what is buffered so far.)"""
        if r.content_length is not None and r.content_length > RATES_BODY_MAX_BYTES:
            raise ProviderError("answer too large")
        raw = bytearray()
        async for chunk in r.content.iter_chunked(RATES_READ_CHUNK_BYTES):
            raw += chunk
            if len(raw) > RATES_BODY_MAX_BYTES:
                raise ProviderError("answer too large")
        return bytes(raw)

    def _parse(self, raw: bytes) -> _Table:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProviderError("answer is not JSON") from None
        if not isinstance(body, dict):
            raise ProviderError("answer is not a JSON object")
        source, as_of_text, rates = body.get("source"), body.get("as_of"), body.get("rates")
        if not isinstance(source, str) or not _SOURCE.fullmatch(source):
            raise ProviderError("source: a name of letters, digits and _ . : @ -, at most 64")
        try:
            as_of = datetime.fromisoformat(as_of_text) if isinstance(as_of_text, str) else None
        except ValueError:
            as_of = None
        if as_of is None or as_of.tzinfo is None:
            raise ProviderError("as_of: an ISO 8601 time with a zone")
        if (as_of - self._clock()).total_seconds() * 1000 > CLOCK_AHEAD_MAX_MS:
            raise ProviderError("as_of: in the future (the provider's clock is ahead)")
        if not isinstance(rates, dict) or len(rates) > RATES_PAIRS_MAX:
            raise ProviderError(f"rates: an object of at most {RATES_PAIRS_MAX} pairs")
        # Numbers are refused (they went through a float); bad strings fail when asked for.
        kept = {k: v for k, v in rates.items() if isinstance(k, str) and isinstance(v, str)}
        return _Table(rates=kept, source=source, as_of=as_of)
