"""Bridge settings: read once from the environment at start-up, validated, frozen.

A PSP is enabled when its API key and webhook secret are set. Secrets (wallet token, cashier
API keys, PSP keys and webhook secrets) have no defaults and never appear in repr() or logs;
each can come from the variable itself or from a file named by `<NAME>_FILE`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway_bridge.incidents.rules import IncidentPolicy
from gateway_bridge.psp.base import PspConfig
from gateway_bridge.risk.rules import SCORE_MAX, Outcome, RiskPolicy, Threshold
from gateway_bridge.shared.money import AMOUNT_MAX_MINOR, EXPONENTS
from service_kit.settings import EnvReader, SettingsError

PSP_NAMES = ("stripe", "adyen", "nowpayments")
# Name of each PSP's webhook secret variable, as the PSPs themselves call it.
# Poll at the PSP's pending limit, then 1 h and 1 day later (DESIGN.md §10), then time out.
DEFAULT_SYNC_SCHEDULE_MS = (300_000, 3_600_000, 86_400_000)
# Pool connections kept free of inbox workers, so webhooks are stored during a wallet outage.
WEBHOOK_CONNECTIONS_MIN = 2
_SECRET_VARS = {"stripe": "WEBHOOK_SECRET", "adyen": "HMAC_KEY", "nowpayments": "IPN_SECRET"}


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = field(repr=False)
    wallet_token: str = field(repr=False)
    # sha256(api key) -> cashier client name
    clients_by_key_sha256: Mapping[bytes, str] = field(default_factory=dict, repr=False)
    psps: Mapping[str, PspConfig] = field(default_factory=dict)
    listen_addr: str = "127.0.0.1:8080"
    # host:port of the Prometheus /metrics listener; empty: no listener.
    metrics_addr: str = ""
    # Base URL PSPs reach us at; NOWPayments takes the IPN callback URL per payment.
    public_url: str = "http://127.0.0.1:8080"
    wallet_addr: str = "127.0.0.1:50051"
    # TLS to the wallet: the CA that signed its certificate (empty: plaintext unless a client
    # certificate is set, then the system roots), and our client certificate for a wallet
    # that requires one (WALLET_TLS_CLIENT_CA_FILE, mutual TLS).
    wallet_tls_ca_file: str = ""
    wallet_tls_cert_file: str = ""
    wallet_tls_key_file: str = ""
    # TLS on the PSP/cashier listener (PEM files; both or neither). Version floor: TLS 1.2.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Each wallet call's deadline; a worker holds a payment row lock at most this long.
    wallet_timeout_ms: int = 3000
    # Request bodies above this get 413 before they are read (Adyen batches are the largest).
    body_size_max_bytes: int = 256 * 1024
    # A withdrawal spends a wallet call and a PSP call (with its retries) inside this.
    request_timeout_ms: int = 30_000
    db_pool_size_max: int = 8
    db_statement_timeout_ms: int = 5000
    # How long a use case waits for a pooled connection before it answers "unavailable".
    db_acquire_timeout_ms: int = 2000
    # Inbox: worker tasks, attempts before dead-letter, backoff doubling up to a cap.
    inbox_workers: int = 4
    # About a day of retries at the 5-minute cap: PSPs retry for days, and a wallet outage
    # must not dead-letter everything that arrived during it.
    inbox_attempts_max: int = 300
    inbox_backoff_ms: int = 500
    inbox_backoff_max_ms: int = 300_000
    inbox_poll_ms: int = 500
    # Status sync: after a PSP's pending limit, poll on this schedule, then `timed_out`.
    sync_interval_ms: int = 1000
    # Health probes of each PSP's API, and the metrics gauges read from Postgres; both run
    # only when the metrics listener is on (nobody would see them otherwise).
    probe_interval_ms: int = 30_000
    metrics_refresh_ms: int = 15_000
    sync_batch_max: int = 50
    sync_schedule_ms: tuple[int, ...] = DEFAULT_SYNC_SCHEDULE_MS
    pending_limit_ms: Mapping[str, int] = field(default_factory=dict)
    # Crypto partial payments: credit what arrived (True) or hold for support (False).
    credit_partial_payments: bool = False
    shutdown_grace_ms: int = 10_000
    log_level: str = "INFO"
    # Fraud and risk rules (docs/RISK.md), and the cashier clients allowed to approve or
    # reject held payments over HTTP (none: only the use case / CLI can).
    risk: RiskPolicy = field(default_factory=RiskPolicy)
    risk_support_clients: frozenset[str] = frozenset()
    # Currency conversion (docs/FX.md): the rates provider's URL (empty: FX off, paying in
    # another currency is refused), the spread taken from the player, the oldest rate used
    # (by the provider's as_of), and the provider's timeout. The URL is kept out of repr():
    # providers put API keys in it.
    fx_rates_url: str = field(default="", repr=False)
    fx_spread_bps: int = 150
    fx_rate_age_max_ms: int = 60_000
    fx_timeout_ms: int = 2_000
    # Incident detection rules and how often they run (docs/INCIDENTS.md).
    incidents: IncidentPolicy = field(default_factory=IncidentPolicy)

    def pending_limit_for(self, psp: str) -> int:
        return self.pending_limit_ms.get(psp, self.sync_schedule_ms[0])


def read_secret(env: Mapping[str, str], r: EnvReader, name: str, *, required: bool) -> str:
    """NAME, or the contents of the file NAME_FILE names; a problem noted when required and
    missing, or when the file cannot be read."""
    path = env.get(f"{name}_FILE", "")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            r.problems.append(f"{name}_FILE: cannot read {path}: {exc.strerror}")
            return ""
    value = env.get(name, "")
    if required and not value:
        r.problems.append(f"{name} (or {name}_FILE): required, not set")
    return value


def _clients(raw: str, r: EnvReader) -> dict[bytes, str]:
    """BRIDGE_API_KEYS: {"<client>": "<api key>", ...} for the cashier REST API."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        r.problems.append('BRIDGE_API_KEYS: not valid JSON (expected {"client": "key"})')
        return {}
    if not isinstance(parsed, dict) or not parsed:
        r.problems.append("BRIDGE_API_KEYS: expected a non-empty JSON object")
        return {}
    clients: dict[bytes, str] = {}
    for name, key in parsed.items():
        if not isinstance(key, str) or len(key) < 16:
            r.problems.append(f"BRIDGE_API_KEYS[{name}]: a key of 16+ characters")
            continue
        clients[hashlib.sha256(key.encode()).digest()] = str(name)
    return clients


def _psps(env: Mapping[str, str], r: EnvReader, public_url: str) -> dict[str, PspConfig]:
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
        psps[name] = PspConfig(
            name=name, base_url=r.text(prefix + "BASE_URL").rstrip("/"), api_key=api_key,
            webhook_secret=secret,
            merchant_account=env.get(prefix + "MERCHANT_ACCOUNT", "") or "",
            callback_url=f"{public_url.rstrip('/')}/webhooks/{name}",
            timeout_ms=r.integer("BRIDGE_PSP_TIMEOUT_MS", 5000, low=50, high=60_000),
            retries_max=r.integer("BRIDGE_PSP_RETRIES_MAX", 2, low=0, high=10),
            retry_backoff_ms=r.integer("BRIDGE_PSP_RETRY_BACKOFF_MS", 200, low=1, high=60_000),
            breaker_failures_max=r.integer("BRIDGE_PSP_BREAKER_FAILURES_MAX", 5, low=1,
                                           high=1000),
            breaker_cooldown_ms=r.integer("BRIDGE_PSP_BREAKER_COOLDOWN_MS", 30_000, low=10,
                                          high=3_600_000),
            webhook_tolerance_s=r.integer("BRIDGE_STRIPE_TOLERANCE_S", 300, low=10,
                                          high=3600))
    if "adyen" in psps and not psps["adyen"].merchant_account:
        r.problems.append("BRIDGE_ADYEN_MERCHANT_ACCOUNT: required when Adyen is enabled")
    if not psps and not r.problems:
        r.problems.append("no PSP enabled: set BRIDGE_<PSP>_API_KEY and its webhook secret "
                          f"for at least one of {', '.join(PSP_NAMES)}")
    return psps


def _schedule(raw: str, r: EnvReader) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in raw.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or len(values) > 20 or any(not 10 <= v <= 30 * 86_400_000 for v in values):
        r.problems.append("BRIDGE_SYNC_SCHEDULE_MS: 1-20 comma-separated delays in ms, "
                          "each 10..2592000000")
        return DEFAULT_SYNC_SCHEDULE_MS
    return values


def load(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    r = EnvReader(env)
    public_url = r.text("BRIDGE_PUBLIC_URL", "http://127.0.0.1:8080")
    keys_raw = read_secret(env, r, "BRIDGE_API_KEYS", required=True)
    schedule = _schedule(env.get("BRIDGE_SYNC_SCHEDULE_MS", "") or "300000,3600000,86400000", r)
    psps = _psps(env, r, public_url)
    settings = Settings(
        database_url=r.text("DATABASE_URL"),
        wallet_token=read_secret(env, r, "BRIDGE_WALLET_TOKEN", required=True),
        clients_by_key_sha256=_clients(keys_raw, r) if keys_raw else {},
        psps=psps,
        listen_addr=r.text("BRIDGE_LISTEN_ADDR", "127.0.0.1:8080"),
        metrics_addr=r.text("BRIDGE_METRICS_ADDR", ""),
        public_url=public_url,
        wallet_addr=r.text("BRIDGE_WALLET_ADDR", "127.0.0.1:50051"),
        wallet_tls_ca_file=env.get("BRIDGE_WALLET_TLS_CA_FILE", ""),
        wallet_tls_cert_file=env.get("BRIDGE_WALLET_TLS_CERT_FILE", ""),
        wallet_tls_key_file=env.get("BRIDGE_WALLET_TLS_KEY_FILE", ""),
        tls_cert_file=env.get("BRIDGE_TLS_CERT_FILE", ""),
        tls_key_file=env.get("BRIDGE_TLS_KEY_FILE", ""),
        wallet_timeout_ms=r.integer("BRIDGE_WALLET_TIMEOUT_MS", 3000, low=50, high=60_000),
        body_size_max_bytes=r.integer("BRIDGE_BODY_SIZE_MAX_BYTES", 256 * 1024, low=1024,
                                      high=8 * 1024 * 1024),
        request_timeout_ms=r.integer("BRIDGE_REQUEST_TIMEOUT_MS", 30_000, low=100,
                                     high=120_000),
        db_pool_size_max=r.integer("BRIDGE_DB_POOL_SIZE_MAX", 8, low=2, high=64),
        db_acquire_timeout_ms=r.integer("BRIDGE_DB_ACQUIRE_TIMEOUT_MS", 2000, low=10,
                                        high=60_000),
        db_statement_timeout_ms=r.integer("BRIDGE_DB_STATEMENT_TIMEOUT_MS", 5000, low=100,
                                          high=600_000),
        inbox_workers=r.integer("BRIDGE_INBOX_WORKERS", 4, low=1, high=64),
        inbox_attempts_max=r.integer("BRIDGE_INBOX_ATTEMPTS_MAX", 300, low=1, high=10_000),
        inbox_backoff_ms=r.integer("BRIDGE_INBOX_BACKOFF_MS", 500, low=10, high=600_000),
        inbox_backoff_max_ms=r.integer("BRIDGE_INBOX_BACKOFF_MAX_MS", 300_000, low=10,
                                       high=86_400_000),
        inbox_poll_ms=r.integer("BRIDGE_INBOX_POLL_MS", 500, low=10, high=60_000),
        sync_interval_ms=r.integer("BRIDGE_SYNC_INTERVAL_MS", 1000, low=10, high=3_600_000),
        probe_interval_ms=r.integer("BRIDGE_PROBE_INTERVAL_MS", 30_000, low=1000,
                                    high=3_600_000),
        metrics_refresh_ms=r.integer("BRIDGE_METRICS_REFRESH_MS", 15_000, low=1000,
                                     high=3_600_000),
        sync_batch_max=r.integer("BRIDGE_SYNC_BATCH_MAX", 50, low=1, high=10_000),
        sync_schedule_ms=schedule,
        pending_limit_ms={name: r.integer(f"BRIDGE_{name.upper()}_PENDING_LIMIT_MS",
                                          schedule[0], low=10, high=30 * 86_400_000)
                          for name in psps},
        credit_partial_payments=r.flag("BRIDGE_CREDIT_PARTIAL_PAYMENTS", False),
        shutdown_grace_ms=r.integer("BRIDGE_SHUTDOWN_GRACE_MS", 10_000, low=0, high=300_000),
        log_level=r.text("BRIDGE_LOG_LEVEL", "INFO").upper(),
        risk=_risk(env, r),
        risk_support_clients=frozenset(
            c.strip() for c in env.get("BRIDGE_RISK_SUPPORT_CLIENTS", "").split(",")
            if c.strip()),
        fx_rates_url=env.get("BRIDGE_FX_RATES_URL", ""),
        fx_spread_bps=r.integer("BRIDGE_FX_SPREAD_BPS", 150, low=0, high=5_000),
        fx_rate_age_max_ms=r.integer("BRIDGE_FX_RATE_AGE_MAX_MS", 60_000, low=100,
                                     high=86_400_000),
        fx_timeout_ms=r.integer("BRIDGE_FX_TIMEOUT_MS", 2_000, low=10, high=30_000),
        incidents=_incidents(r),
    )
    if settings.database_url and not settings.database_url.startswith(("postgresql://",
                                                                       "postgres://")):
        r.problems.append("DATABASE_URL: must start with postgresql://")
    if ":" not in settings.listen_addr:
        r.problems.append("BRIDGE_LISTEN_ADDR: expected host:port")
    if settings.metrics_addr and not settings.metrics_addr.rpartition(":")[2].isdigit():
        r.problems.append("BRIDGE_METRICS_ADDR: expected host:port")
    if settings.inbox_workers + WEBHOOK_CONNECTIONS_MIN > settings.db_pool_size_max:
        r.problems.append(f"BRIDGE_INBOX_WORKERS: each worker can hold a connection through "
                          f"a wallet call; keep at least {WEBHOOK_CONNECTIONS_MIN} of "
                          f"BRIDGE_DB_POOL_SIZE_MAX ({settings.db_pool_size_max}) for storing "
                          "webhooks")
    if settings.inbox_backoff_ms > settings.inbox_backoff_max_ms:
        r.problems.append("BRIDGE_INBOX_BACKOFF_MS: larger than BRIDGE_INBOX_BACKOFF_MAX_MS")
    _check_tls_files(settings, r)
    unknown = settings.risk_support_clients - set(settings.clients_by_key_sha256.values())
    if unknown and settings.clients_by_key_sha256:
        r.problems.append(f"BRIDGE_RISK_SUPPORT_CLIENTS: {', '.join(sorted(unknown))} not "
                          "named in BRIDGE_API_KEYS")
    if settings.risk.scoring_url and not settings.risk.scoring_url.startswith(
            ("http://", "https://")):
        r.problems.append("BRIDGE_RISK_SCORING_URL: expected an http(s):// URL")
    if settings.risk.scoring_timeout_ms >= settings.request_timeout_ms:
        r.problems.append("BRIDGE_RISK_SCORING_TIMEOUT_MS: must be below "
                          "BRIDGE_REQUEST_TIMEOUT_MS (the scorer is asked inside a request)")
    if settings.fx_rates_url and not settings.fx_rates_url.startswith(("http://", "https://")):
        r.problems.append("BRIDGE_FX_RATES_URL: expected an http(s):// URL (empty: FX off)")
    if settings.fx_timeout_ms >= settings.request_timeout_ms:
        r.problems.append("BRIDGE_FX_TIMEOUT_MS: must be below BRIDGE_REQUEST_TIMEOUT_MS (the "
                          "rates provider is asked inside a cashier request)")
    # An inbox worker waits for the rates provider inside its open transaction; the pool's
    # idle-in-transaction limit (gateway_bridge.server.create_pool: twice the larger of the
    # statement and wallet timeouts) would end its session. Half that window leaves the
    # other half as margin.
    fx_idle_max_ms = max(settings.db_statement_timeout_ms, settings.wallet_timeout_ms)
    if settings.fx_timeout_ms > fx_idle_max_ms:
        r.problems.append(f"BRIDGE_FX_TIMEOUT_MS: {settings.fx_timeout_ms} ms is above "
                          f"{fx_idle_max_ms} ms, the larger of BRIDGE_DB_STATEMENT_TIMEOUT_MS "
                          "and BRIDGE_WALLET_TIMEOUT_MS (an inbox worker asks the rates "
                          "provider inside its transaction, which the database ends after "
                          "twice that idle)")
    r.done()
    return settings


# Risk windows: a second up to 90 days (the wagering look-back is the longest in practice).
RISK_WINDOW_MAX_S = 90 * 86_400
RISK_COUNT_MAX = 1_000_000


def _risk(env: Mapping[str, str], r: EnvReader) -> RiskPolicy:
    p = "BRIDGE_RISK_"
    defaults = RiskPolicy()

    def window(name: str, default: int) -> int:
        return r.integer(p + name, default, low=1, high=RISK_WINDOW_MAX_S)

    return RiskPolicy(
        enabled=r.flag(p + "ENABLED", defaults.enabled),
        window_s=window("WINDOW_S", defaults.window_s),
        player_count=_threshold(r, p + "PLAYER_COUNT", defaults.player_count, RISK_COUNT_MAX),
        player_amount_minor=_amounts(env, r, p + "PLAYER_AMOUNT_MINOR"),
        instrument_count=_threshold(r, p + "INSTRUMENT_COUNT", defaults.instrument_count,
                                    RISK_COUNT_MAX),
        instrument_amount_minor=_amounts(env, r, p + "INSTRUMENT_AMOUNT_MINOR"),
        amount_minor=_amounts(env, r, p + "AMOUNT_MINOR"),
        instrument_players=_threshold(r, p + "INSTRUMENT_PLAYERS",
                                      defaults.instrument_players, RISK_COUNT_MAX),
        instrument_players_window_s=window("INSTRUMENT_PLAYERS_WINDOW_S",
                                           defaults.instrument_players_window_s),
        wagering_percent_min=r.integer(p + "WAGERING_PERCENT_MIN", 0, low=0, high=10_000),
        wagering_window_s=window("WAGERING_WINDOW_S", defaults.wagering_window_s),
        wagering_outcome=_outcome(env, r, p + "WAGERING_DECISION", Outcome.REVIEW,
                                  allow=False),
        country_currencies=_countries(env, r, p + "COUNTRY_CURRENCIES"),
        country_outcome=_outcome(env, r, p + "COUNTRY_DECISION", Outcome.REVIEW, allow=False),
        scoring_url=env.get(p + "SCORING_URL", ""),
        scoring_timeout_ms=r.integer(p + "SCORING_TIMEOUT_MS", defaults.scoring_timeout_ms,
                                     low=10, high=10_000),
        scoring=_threshold(r, p + "SCORING", defaults.scoring, SCORE_MAX),
        scoring_failure_outcome=_outcome(env, r, p + "SCORING_FAILURE_DECISION",
                                         Outcome.REVIEW, allow=True),
    )


def _threshold(r: EnvReader, prefix: str, default: Threshold, high: int) -> Threshold:
    """<prefix>_REVIEW_ABOVE and <prefix>_DENY_ABOVE; 0 switches a step off."""
    review = r.integer(prefix + "_REVIEW_ABOVE", default.review_above, low=0, high=high)
    deny = r.integer(prefix + "_DENY_ABOVE", default.deny_above, low=0, high=high)
    if review and deny and review > deny:
        r.problems.append(f"{prefix}_REVIEW_ABOVE: {review} is above {prefix}_DENY_ABOVE "
                          f"({deny}); review must start at or below deny")
    return Threshold(review_above=review, deny_above=deny)


def _json_object(env: Mapping[str, str], r: EnvReader, name: str,
                 problem: str) -> dict[str, Any]:
    """An optional setting holding a JSON object: {} when unset; `problem` is reported (and
    {} returned) when it is not valid JSON or not an object."""
    raw = env.get(name, "")
    if not raw:
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        r.problems.append(problem)
        return {}
    return parsed


def _amounts(env: Mapping[str, str], r: EnvReader, name: str) -> dict[str, Threshold]:
    """{"USD": [review_above, deny_above], ...} in minor units; 0 switches a step off."""
    problem = (f'{name}: expected {{"<currency>": [review_above, deny_above], ...}} in '
               f"minor units, each 0..{AMOUNT_MAX_MINOR}, currencies among "
               f"{', '.join(sorted(EXPONENTS))}")
    parsed = _json_object(env, r, name, problem)
    limits: dict[str, Threshold] = {}
    for currency, pair in parsed.items():
        if (currency not in EXPONENTS or not isinstance(pair, list) or len(pair) != 2
                or not all(type(v) is int and 0 <= v <= AMOUNT_MAX_MINOR for v in pair)):
            r.problems.append(f"{problem} (at {currency!r})")
            continue
        review, deny = pair
        if review and deny and review > deny:
            r.problems.append(f"{name}[{currency}]: review_above {review} is above "
                              f"deny_above {deny}")
        limits[currency] = Threshold(review_above=review, deny_above=deny)
    return limits


def _countries(env: Mapping[str, str], r: EnvReader, name: str) -> dict[str, frozenset[str]]:
    """{"DE": ["EUR"], "GB": ["GBP", "EUR"], ...}: ISO 3166 alpha-2 -> currencies."""
    problem = f'{name}: expected {{"<country, 2 capitals>": ["<currency>", ...], ...}}'
    parsed = _json_object(env, r, name, problem)
    countries: dict[str, frozenset[str]] = {}
    for country, currencies in parsed.items():
        if (not (len(country) == 2 and country.isascii() and country.isupper())
                or not isinstance(currencies, list) or not currencies
                or not all(c in EXPONENTS for c in currencies)):
            r.problems.append(f"{problem} (at {country!r}; currencies among "
                              f"{', '.join(sorted(EXPONENTS))})")
            continue
        countries[country] = frozenset(currencies)
    return countries


def _outcome(env: Mapping[str, str], r: EnvReader, name: str, default: Outcome, *,
             allow: bool) -> Outcome:
    raw = env.get(name, "") or default.value
    choices = [o.value for o in Outcome if allow or o is not Outcome.ALLOW]
    if raw not in choices:
        r.problems.append(f"{name}: {raw!r} is not one of {', '.join(choices)}")
        return default
    return Outcome(raw)


def _check_tls_files(s: Settings, r: EnvReader) -> None:
    for pair in (("BRIDGE_TLS_CERT_FILE", s.tls_cert_file, "BRIDGE_TLS_KEY_FILE",
                  s.tls_key_file),
                 ("BRIDGE_WALLET_TLS_CERT_FILE", s.wallet_tls_cert_file,
                  "BRIDGE_WALLET_TLS_KEY_FILE", s.wallet_tls_key_file)):
        if bool(pair[1]) != bool(pair[3]):
            r.problems.append(f"{pair[0]}/{pair[2]}: set both or neither")
    for name, path in (("BRIDGE_TLS_CERT_FILE", s.tls_cert_file),
                       ("BRIDGE_TLS_KEY_FILE", s.tls_key_file),
                       ("BRIDGE_WALLET_TLS_CA_FILE", s.wallet_tls_ca_file),
                       ("BRIDGE_WALLET_TLS_CERT_FILE", s.wallet_tls_cert_file),
                       ("BRIDGE_WALLET_TLS_KEY_FILE", s.wallet_tls_key_file)):
        if path and not Path(path).is_file():
            r.problems.append(f"{name}: {path} does not exist")


__all__ = ["PSP_NAMES", "Settings", "SettingsError", "load"]


# Each rule's setting -> (low, high); BRIDGE_INCIDENT_<NAME> in the environment.
_INCIDENT_BOUNDS: dict[str, tuple[int, int]] = {
    "interval_ms": (100, 3_600_000),
    "deposit_window_s": (1, 7 * 86_400),
    "deposit_finished_min": (1, 1_000_000),
    "deposit_failure_percent": (1, 100),
    "withdrawal_sla_s": (1, 30 * 86_400),
    "withdrawal_delayed_min": (1, 1_000_000),
    "callback_window_s": (1, 7 * 86_400),
    "callback_errors_min": (1, 1_000_000),
    "mismatch_window_s": (1, 7 * 86_400),
    "mismatch_min": (1, 1_000_000),
    "timeout_min": (1, 1_000_000),
    "probe_failures_min": (1, 100),
    "affected_max": (1, 10_000),
    "observe_every_s": (0, 86_400),
}


def _incidents(r: EnvReader) -> IncidentPolicy:
    defaults = IncidentPolicy()
    values: dict[str, Any] = {
        name: r.integer(f"BRIDGE_INCIDENT_{name.upper()}", getattr(defaults, name),
                        low=low, high=high)
        for name, (low, high) in _INCIDENT_BOUNDS.items()}
    return IncidentPolicy(enabled=r.flag("BRIDGE_INCIDENTS_ENABLED", defaults.enabled),
                          **values)
