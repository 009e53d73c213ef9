"""KYC settings (docs/COMPLIANCE.md). KYC is on when a provider is configured
(BRIDGE_KYC_ONFIDO_BASE_URL with its API and webhook tokens); its gates then apply, each with
the default a regulated casino starts from:

    BRIDGE_KYC_DEPOSIT_THRESHOLD_MINOR   200000   cumulative deposits an unverified player may
                                                  make, in BRIDGE_KYC_THRESHOLD_CURRENCY (EUR):
                                                  the EU due-diligence threshold, 2,000 EUR
    BRIDGE_KYC_MIN_AGE                   18       the minimum age, unless the country says more
    BRIDGE_KYC_MIN_AGE_BY_COUNTRY        {}       {"USA": 21, ...}, ISO 3166-1 alpha-3 (as
                                                  Onfido reports the country)
    BRIDGE_KYC_BLOCKED_COUNTRIES         ""       alpha-3 codes, comma-separated
    BRIDGE_KYC_LATE_AFTER_MS             600000   a check without an answer this long is
                                                  asked about (every _POLL_INTERVAL_MS, 30 s)

Withdrawals always need a verified player while KYC is on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from gateway_bridge.psp.base import PspConfig
from service_kit.settings import EnvReader, read_secret

_ALPHA3 = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True, slots=True)
class KycSettings:
    provider: PspConfig | None = None  # None: KYC off, no gates
    deposit_threshold_minor: int = 200_000
    threshold_currency: str = "EUR"
    min_age: int = 18
    min_age_by_country: Mapping[str, int] = field(default_factory=dict)
    blocked_countries: frozenset[str] = frozenset()
    # A check without an answer this long is asked about (its webhook lost, or never sent).
    late_after_ms: int = 600_000
    poll_interval_ms: int = 30_000

    @property
    def enabled(self) -> bool:
        return self.provider is not None


def load(env: Mapping[str, str], r: EnvReader, *, outbound: PspConfig) -> KycSettings:
    """`outbound`: the PSPs' timeouts, retries and breaker, which the provider's client
    shares."""
    d = KycSettings()
    base_url = env.get("BRIDGE_KYC_ONFIDO_BASE_URL", "").rstrip("/")
    api_token = read_secret(env, r, "BRIDGE_KYC_ONFIDO_API_TOKEN", required=bool(base_url))
    webhook_token = read_secret(env, r, "BRIDGE_KYC_ONFIDO_WEBHOOK_TOKEN",
                                required=bool(base_url))
    provider = None
    if base_url:
        provider = PspConfig(
            name="onfido", base_url=base_url, api_key=api_token, webhook_secret=webhook_token,
            timeout_ms=outbound.timeout_ms, retries_max=outbound.retries_max,
            retry_backoff_ms=outbound.retry_backoff_ms,
            breaker_failures_max=outbound.breaker_failures_max,
            breaker_cooldown_ms=outbound.breaker_cooldown_ms)
    by_country: dict[str, int] = {}
    raw = env.get("BRIDGE_KYC_MIN_AGE_BY_COUNTRY", "")
    if raw.strip():
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict) or not all(
                isinstance(k, str) and _ALPHA3.fullmatch(k) and isinstance(v, int)
                and not isinstance(v, bool) and 16 <= v <= 25 for k, v in parsed.items()):
            r.problems.append('BRIDGE_KYC_MIN_AGE_BY_COUNTRY: {"USA": 21, ...}: alpha-3 codes '
                              "to ages 16..25")
        else:
            by_country = dict(parsed)
    blocked = frozenset(c.strip().upper() for c in
                        env.get("BRIDGE_KYC_BLOCKED_COUNTRIES", "").split(",") if c.strip())
    if any(not _ALPHA3.fullmatch(c) for c in blocked):
        r.problems.append("BRIDGE_KYC_BLOCKED_COUNTRIES: ISO 3166-1 alpha-3 codes, "
                          "comma-separated")
    currency = r.text("BRIDGE_KYC_THRESHOLD_CURRENCY", d.threshold_currency).upper()
    return KycSettings(
        provider=provider,
        deposit_threshold_minor=r.integer("BRIDGE_KYC_DEPOSIT_THRESHOLD_MINOR",
                                          d.deposit_threshold_minor, low=0, high=10**15),
        threshold_currency=currency,
        min_age=r.integer("BRIDGE_KYC_MIN_AGE", d.min_age, low=16, high=25),
        min_age_by_country=by_country, blocked_countries=blocked,
        late_after_ms=r.integer("BRIDGE_KYC_LATE_AFTER_MS", d.late_after_ms, low=100,
                                high=86_400_000),
        poll_interval_ms=r.integer("BRIDGE_KYC_POLL_INTERVAL_MS", d.poll_interval_ms,
                                   low=50, high=3_600_000))
