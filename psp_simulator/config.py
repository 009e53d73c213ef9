"""Simulator settings: read once from the environment, validated, frozen; plus the knobs.

The PSP secrets use the bridge's own variable names (`BRIDGE_STRIPE_API_KEY`, ...) so one
environment file configures both sides of the conversation. Knobs (latency, errors,
downtime, duplicated/reordered/dropped/delayed webhooks, auto-completion) start from
`SIM_*` variables and can be changed while running through `POST /_sim/knobs`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from service_kit.settings import EnvReader, SettingsError

AUTO_OUTCOMES = frozenset({"success", "succeeded", "paid", "failed", "expired"})
POLL_STATUS_MAX_CHARS = 40

# Knob -> (low, high) for the integer knobs, validated on start-up and on every change.
_INT_KNOBS: dict[str, tuple[int, int]] = {
    "latency_ms": (0, 120_000),
    "duplicate_count": (0, 10),
    "delay_ms": (0, 600_000),
    "auto_complete_ms": (0, 3_600_000),
}
PSP_NAMES = ("stripe", "adyen", "nowpayments")
_PSP_RATE_MAPS = ("decline_rate_by_psp", "soft_decline_share_by_psp")
_PSP_LISTS = ("down_psps", "refund_fail_psps")
# Half the declines of a charge are soft unless a knob says otherwise.
DEFAULT_SOFT_SHARE = 0.5
METHODS_MAX = 50
DECLINE_CODE_MAX_CHARS = 40
_RATE_KNOBS = ("error_rate", "decline_rate", "drop_rate")
_FLAG_KNOBS = ("down", "reorder")


@dataclass(frozen=True, slots=True)
class Knobs:
    """Misbehaviour on demand. Rates are probabilities (floats are fine: no money here)."""

    latency_ms: int = 0          # added to every PSP API answer
    error_rate: float = 0.0      # share of API calls answered 500
    down: bool = False           # every API call answered 503
    down_psps: tuple[str, ...] = ()  # only these PSPs' API calls answered 503 (routing)
    # Refunds at these PSPs fail: Stripe's refund answers `failed`, Adyen accepts it and
    # then notifies REFUND success=false.
    refund_fail_psps: tuple[str, ...] = ()
    decline_rate: float = 0.0    # payouts refused with a 4xx; deposits completed as failed
    # Per-PSP decline rates, overriding decline_rate for the PSPs named (routing demos).
    decline_rate_by_psp: Mapping[str, float] = dataclasses.field(default_factory=dict)
    # Card charges (server-to-server): approval per PSP and payment method, overriding
    # 1 - decline_rate_for(psp); the share of declines that are soft (try elsewhere); a
    # decline code every charge at a PSP gets (deterministic tests); extra answer latency
    # per PSP (a reply that comes after the caller gave up: the work is done regardless).
    approval_by_psp_method: Mapping[str, Mapping[str, float]] = dataclasses.field(
        default_factory=dict)
    soft_decline_share_by_psp: Mapping[str, float] = dataclasses.field(default_factory=dict)
    decline_code_by_psp: Mapping[str, str] = dataclasses.field(default_factory=dict)
    latency_ms_by_psp: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # Time a PSP spends on a request before doing it, its idempotency key held meanwhile:
    # a second request with the same key gets 409 (in progress), as at Stripe.
    work_ms_by_psp: Mapping[str, int] = dataclasses.field(default_factory=dict)
    duplicate_count: int = 0     # each webhook sent 1 + N times
    reorder: bool = False        # a completion's webhooks delivered in reverse order
    delay_ms: int = 0            # webhooks held this long before the first attempt
    drop_rate: float = 0.0       # share of webhooks never delivered
    auto_complete_ms: int = 0    # 0 = off; else deposits/payouts complete after this delay
    auto_outcome: str = "success"  # success (succeeded/paid), failed, expired
    poll_status: str = ""        # "" (or null) = real; else what every status GET answers

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def decline_rate_for(self, psp: str) -> float:
        return self.decline_rate_by_psp.get(psp, self.decline_rate)

    def approval_for(self, psp: str, method: str) -> float:
        by_method = self.approval_by_psp_method.get(psp, {})
        return by_method.get(method, 1 - self.decline_rate_for(psp))

    def soft_share_for(self, psp: str) -> float:
        return self.soft_decline_share_by_psp.get(psp, DEFAULT_SOFT_SHARE)

    def latency_ms_for(self, psp: str) -> int:
        return self.latency_ms + self.latency_ms_by_psp.get(psp, 0)

    def updated(self, changes: Mapping[str, object]) -> Knobs:
        """A copy with `changes` applied; raises ValueError naming every bad knob."""
        problems: list[str] = []
        values: dict[str, object] = {}
        for name, value in changes.items():
            if name == "poll_status" and value is None:
                value = ""  # null turns the override off, like ""
            error = _knob_problem(name, value)
            if error:
                problems.append(error)
            elif name in _RATE_KNOBS and isinstance(value, int | float):
                values[name] = float(value)
            elif name in _PSP_LISTS and isinstance(value, list | tuple):
                values[name] = tuple(value)
            elif name in _PSP_RATE_MAPS and isinstance(value, dict):
                values[name] = {p: float(r) for p, r in value.items()}
            elif name == "approval_by_psp_method" and isinstance(value, dict):
                values[name] = {p: {m: float(r) for m, r in by.items()}
                                for p, by in value.items()}
            else:
                values[name] = value
        if problems:
            raise ValueError("; ".join(problems))
        return dataclasses.replace(self, **values)  # type: ignore[arg-type]


def _is_rate(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and math.isfinite(value) and 0 <= value <= 1)


def _knob_problem(name: str, value: object) -> str:
    if name in _INT_KNOBS:
        low, high = _INT_KNOBS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"{name}: an integer in {low}..{high}"
    elif name in _RATE_KNOBS:
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or not 0 <= value <= 1):
            return f"{name}: a number in 0..1"
    elif name in _FLAG_KNOBS:
        if not isinstance(value, bool):
            return f"{name}: true or false"
    elif name in _PSP_RATE_MAPS:
        if not isinstance(value, dict) or not all(
                p in PSP_NAMES and _is_rate(r) for p, r in value.items()):
            return f"{name}: an object of PSP name ({', '.join(PSP_NAMES)}) to a number in 0..1"
    elif name == "approval_by_psp_method":
        if not isinstance(value, dict) or not all(
                p in PSP_NAMES and isinstance(by, dict) and len(by) <= METHODS_MAX
                and all(isinstance(m, str) and _is_rate(r) for m, r in by.items())
                for p, by in value.items()):
            return "approval_by_psp_method: an object of PSP name to an object of payment " \
                   "method to a number in 0..1"
    elif name == "decline_code_by_psp":
        if not isinstance(value, dict) or not all(
                p in PSP_NAMES and isinstance(c, str) and 0 < len(c) <= DECLINE_CODE_MAX_CHARS
                for p, c in value.items()):
            return f"decline_code_by_psp: an object of PSP name to a decline code of at most " \
                   f"{DECLINE_CODE_MAX_CHARS} characters"
    elif name in ("latency_ms_by_psp", "work_ms_by_psp"):
        low, high = _INT_KNOBS["latency_ms"]
        if not isinstance(value, dict) or not all(
                p in PSP_NAMES and not isinstance(ms, bool) and isinstance(ms, int)
                and low <= ms <= high for p, ms in value.items()):
            return f"{name}: an object of PSP name to an integer in {low}..{high}"
    elif name in _PSP_LISTS:
        if not isinstance(value, list | tuple) or not all(p in PSP_NAMES for p in value):
            return f"{name}: a list of PSP names ({', '.join(PSP_NAMES)})"
    elif name == "auto_outcome":
        if value not in AUTO_OUTCOMES:
            return f"auto_outcome: one of {sorted(AUTO_OUTCOMES)}"
    elif name == "poll_status":
        if not isinstance(value, str) or len(value) > POLL_STATUS_MAX_CHARS:
            return f"poll_status: a string of at most {POLL_STATUS_MAX_CHARS} characters"
    else:
        return f"{name}: unknown knob"
    return ""


@dataclass(frozen=True, slots=True)
class SimSettings:
    # The same values as the bridge's PspConfigs; never in repr().
    stripe_api_key: str = field(repr=False)
    stripe_webhook_secret: str = field(repr=False)
    adyen_api_key: str = field(repr=False)
    adyen_hmac_key: str = field(repr=False)  # hex, as the Customer Area shows it
    adyen_merchant_account: str
    nowpayments_api_key: str = field(repr=False)
    nowpayments_ipn_secret: str = field(repr=False)
    # The KYC provider (Onfido); empty: its API refuses every call (no KYC configured).
    onfido_api_token: str = field(default="", repr=False)
    onfido_webhook_token: str = field(default="", repr=False)
    listen_addr: str = "127.0.0.1:8090"
    # Where the bridge listens: webhooks go to {webhook_base_url}/webhooks/<psp>.
    webhook_base_url: str = "http://127.0.0.1:8080"
    knobs: Knobs = Knobs()
    # Memory bounds: the oldest object / idempotency key / log line goes first.
    objects_max: int = 10_000
    idempotency_keys_max: int = 10_000
    request_log_max: int = 10_000
    delivery_log_max: int = 10_000
    # Webhooks accepted but not yet delivered (queued, delayed or waiting for a retry).
    delivery_queue_max: int = 10_000
    # Like the PSPs: a failed delivery is retried with exponential backoff, then abandoned.
    webhook_attempts_max: int = 4
    webhook_retry_backoff_ms: int = 500
    webhook_timeout_ms: int = 5_000
    # One sender keeps delivery order (what `reorder` perturbs); more for load tests.
    webhook_senders: int = 1
    flush_timeout_ms: int = 30_000
    # 0: a random seed; otherwise error/decline/drop rolls and ids repeat run to run.
    seed: int = 0


_SETTING_RANGES: dict[str, tuple[int, int]] = {
    "objects_max": (1, 1_000_000),
    "idempotency_keys_max": (1, 1_000_000),
    "request_log_max": (1, 1_000_000),
    "delivery_log_max": (1, 1_000_000),
    "delivery_queue_max": (1, 1_000_000),
    "webhook_attempts_max": (1, 20),
    "webhook_retry_backoff_ms": (1, 3_600_000),
    "webhook_timeout_ms": (10, 120_000),
    "webhook_senders": (1, 64),
    "flush_timeout_ms": (10, 600_000),
}


def problems(settings: SimSettings) -> list[str]:
    """What is wrong with settings built in code (tests); `load` reports the same."""
    found: list[str] = []
    for name, (low, high) in _SETTING_RANGES.items():
        value = getattr(settings, name)
        if not low <= value <= high:
            found.append(f"{name}: {value} is outside {low}..{high}")
    if ":" not in settings.listen_addr:
        found.append("listen_addr: expected host:port")
    if not settings.webhook_base_url.startswith(("http://", "https://")):
        found.append("webhook_base_url: must start with http:// or https://")
    try:
        bytes.fromhex(settings.adyen_hmac_key)
    except ValueError:
        found.append("adyen_hmac_key: must be hex")
    for name in ("stripe_api_key", "stripe_webhook_secret", "adyen_api_key", "adyen_hmac_key",
                 "adyen_merchant_account", "nowpayments_api_key", "nowpayments_ipn_secret"):
        if not getattr(settings, name):
            found.append(f"{name}: empty")
    return found


def _rate(r: EnvReader, env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        r.problems.append(f"{name}: {raw!r} is not a number")
        return default
    if not 0 <= value <= 1:
        r.problems.append(f"{name}: {value} is outside 0..1")
    return value


def _knobs(r: EnvReader, env: Mapping[str, str]) -> Knobs:
    problems_before = len(r.problems)
    values: dict[str, object] = {
        name: r.integer(f"SIM_{name.upper()}", 0, low=low, high=high)
        for name, (low, high) in _INT_KNOBS.items()}
    values.update({name: _rate(r, env, f"SIM_{name.upper()}", 0.0) for name in _RATE_KNOBS})
    values.update({name: r.flag(f"SIM_{name.upper()}", False) for name in _FLAG_KNOBS})
    values["auto_outcome"] = r.text("SIM_AUTO_OUTCOME", "success")
    values["poll_status"] = env.get("SIM_POLL_STATUS", "")
    if len(r.problems) > problems_before:
        return Knobs()  # already reported, one line per variable
    try:
        return Knobs().updated(values)
    except ValueError as exc:
        r.problems.append(f"SIM_* knobs: {exc}")
        return Knobs()


def load(env: Mapping[str, str] | None = None) -> SimSettings:
    env = os.environ if env is None else env
    r = EnvReader(env)
    defaults = SimSettings("", "", "", "", "", "", "")
    sizes = {name: r.integer(f"SIM_{name.upper()}", getattr(defaults, name), low=low, high=high)
             for name, (low, high) in _SETTING_RANGES.items()}
    settings = SimSettings(
        stripe_api_key=r.text("BRIDGE_STRIPE_API_KEY"),
        stripe_webhook_secret=r.text("BRIDGE_STRIPE_WEBHOOK_SECRET"),
        adyen_api_key=r.text("BRIDGE_ADYEN_API_KEY"),
        adyen_hmac_key=r.text("BRIDGE_ADYEN_HMAC_KEY"),
        adyen_merchant_account=r.text("BRIDGE_ADYEN_MERCHANT_ACCOUNT"),
        nowpayments_api_key=r.text("BRIDGE_NOWPAYMENTS_API_KEY"),
        nowpayments_ipn_secret=r.text("BRIDGE_NOWPAYMENTS_IPN_SECRET"),
        onfido_api_token=env.get("BRIDGE_KYC_ONFIDO_API_TOKEN", ""),
        onfido_webhook_token=env.get("BRIDGE_KYC_ONFIDO_WEBHOOK_TOKEN", ""),
        listen_addr=r.text("SIM_LISTEN_ADDR", "127.0.0.1:8090"),
        webhook_base_url=r.text("SIM_WEBHOOK_BASE_URL", "http://127.0.0.1:8080").rstrip("/"),
        knobs=_knobs(r, env),
        seed=r.integer("SIM_SEED", 0, low=0, high=2**63 - 1),
        **sizes,
    )
    if not r.problems:
        r.problems.extend(problems(settings))
    r.done()
    return settings


__all__ = ["AUTO_OUTCOMES", "Knobs", "SettingsError", "SimSettings", "load", "problems"]
