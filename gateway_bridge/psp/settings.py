"""The PSPs' settings: which PSPs are enabled and each one's `PspConfig`.

A PSP is enabled when its API key and webhook secret are both set (each may come from a
file named by `<NAME>_FILE`); its base URL and, for Adyen, the merchant account come with
it. The outbound knobs (timeout, retries, circuit breaker, Stripe's replay tolerance) are
shared by all PSPs: BRIDGE_PSP_*. Each default is written once, on `PspConfig`'s fields
(psp/base.py); `load` reads it from `_DEFAULTS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from gateway_bridge.psp.base import PspConfig
from service_kit.settings import EnvReader, read_secret

PSP_NAMES = ("stripe", "adyen", "nowpayments")
# Name of each PSP's webhook secret variable, as the PSPs themselves call it.
_SECRET_VARS = {"stripe": "WEBHOOK_SECRET", "adyen": "HMAC_KEY", "nowpayments": "IPN_SECRET"}
# Every field's default; the empty strings only fill the required fields and are never used.
DEFAULTS = PspConfig(name="", base_url="", api_key="", webhook_secret="")
_DEFAULTS = DEFAULTS


def load(env: Mapping[str, str], r: EnvReader, *, public_url: str) -> dict[str, PspConfig]:
    """The enabled PSPs by name; NowPayments' callback URL is built on `public_url`."""
    psps: dict[str, PspConfig] = {}
    for name in PSP_NAMES:
        prefix = f"BRIDGE_{name.upper()}_"
        api_key = read_secret(env, r, prefix + "API_KEY", required=False)
        secret = read_secret(env, r, prefix + _SECRET_VARS[name], required=False)
        if not api_key and not secret:
            continue
        if not api_key or not secret:
            r.problems.append(f"{prefix}API_KEY and {prefix}{_SECRET_VARS[name]}: "
                              "set both to enable this PSP, or neither")
            continue
        if name == "adyen":
            try:
                bytes.fromhex(secret)
            except ValueError:
                r.problems.append(f"{prefix}HMAC_KEY: must be hex, as Adyen shows it")
        psps[name] = _outbound(r, PspConfig(
            name=name, base_url=r.text(prefix + "BASE_URL").rstrip("/"), api_key=api_key,
            webhook_secret=secret,
            merchant_account=env.get(prefix + "MERCHANT_ACCOUNT", _DEFAULTS.merchant_account),
            callback_url=f"{public_url.rstrip('/')}/webhooks/{name}"))
    if "adyen" in psps and not psps["adyen"].merchant_account:
        r.problems.append("BRIDGE_ADYEN_MERCHANT_ACCOUNT: required when Adyen is enabled")
    if not psps and not r.problems:
        r.problems.append("no PSP enabled: set BRIDGE_<PSP>_API_KEY and its webhook secret "
                          f"for at least one of {', '.join(PSP_NAMES)}")
    return psps


def _outbound(r: EnvReader, config: PspConfig) -> PspConfig:
    """The shared BRIDGE_PSP_* knobs on one enabled PSP's config. They are read only when a
    PSP is enabled, so with none enabled a bad knob does not hide "no PSP enabled"."""
    d = _DEFAULTS
    return replace(
        config,
        timeout_ms=r.integer("BRIDGE_PSP_TIMEOUT_MS", d.timeout_ms, low=50, high=60_000),
        retries_max=r.integer("BRIDGE_PSP_RETRIES_MAX", d.retries_max, low=0, high=10),
        retry_backoff_ms=r.integer("BRIDGE_PSP_RETRY_BACKOFF_MS", d.retry_backoff_ms, low=1,
                                   high=60_000),
        breaker_failures_max=r.integer("BRIDGE_PSP_BREAKER_FAILURES_MAX",
                                       d.breaker_failures_max, low=1, high=1000),
        breaker_cooldown_ms=r.integer("BRIDGE_PSP_BREAKER_COOLDOWN_MS", d.breaker_cooldown_ms,
                                      low=10, high=3_600_000),
        webhook_tolerance_s=r.integer("BRIDGE_STRIPE_TOLERANCE_S", d.webhook_tolerance_s,
                                      low=10, high=3600))

