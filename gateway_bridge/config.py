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

import orjson

from gateway_bridge.psp.base import PspConfig
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
    sync_batch_max: int = 50
    sync_schedule_ms: tuple[int, ...] = DEFAULT_SYNC_SCHEDULE_MS
    pending_limit_ms: Mapping[str, int] = field(default_factory=dict)
    # Crypto partial payments: credit what arrived (True) or hold for support (False).
    credit_partial_payments: bool = False
    shutdown_grace_ms: int = 10_000
    log_level: str = "INFO"

    def pending_limit_for(self, psp: str) -> int:
        return self.pending_limit_ms.get(psp, self.sync_schedule_ms[0])


def _secret(env: Mapping[str, str], r: EnvReader, name: str, *, required: bool) -> str:
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
        api_key = _secret(env, r, prefix + "API_KEY", required=False)
        secret = _secret(env, r, prefix + _SECRET_VARS[name], required=False)
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
    keys_raw = _secret(env, r, "BRIDGE_API_KEYS", required=True)
    schedule = _schedule(env.get("BRIDGE_SYNC_SCHEDULE_MS", "") or "300000,3600000,86400000", r)
    psps = _psps(env, r, public_url)
    settings = Settings(
        database_url=r.text("DATABASE_URL"),
        wallet_token=_secret(env, r, "BRIDGE_WALLET_TOKEN", required=True),
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
        db_statement_timeout_ms=r.integer("BRIDGE_DB_STATEMENT_TIMEOUT_MS", 5000, low=100,
                                          high=600_000),
        inbox_workers=r.integer("BRIDGE_INBOX_WORKERS", 4, low=1, high=64),
        inbox_attempts_max=r.integer("BRIDGE_INBOX_ATTEMPTS_MAX", 300, low=1, high=10_000),
        inbox_backoff_ms=r.integer("BRIDGE_INBOX_BACKOFF_MS", 500, low=10, high=600_000),
        inbox_backoff_max_ms=r.integer("BRIDGE_INBOX_BACKOFF_MAX_MS", 300_000, low=10,
                                       high=86_400_000),
        inbox_poll_ms=r.integer("BRIDGE_INBOX_POLL_MS", 500, low=10, high=60_000),
        sync_interval_ms=r.integer("BRIDGE_SYNC_INTERVAL_MS", 1000, low=10, high=3_600_000),
        sync_batch_max=r.integer("BRIDGE_SYNC_BATCH_MAX", 50, low=1, high=10_000),
        sync_schedule_ms=schedule,
        pending_limit_ms={name: r.integer(f"BRIDGE_{name.upper()}_PENDING_LIMIT_MS",
                                          schedule[0], low=10, high=30 * 86_400_000)
                          for name in psps},
        credit_partial_payments=r.flag("BRIDGE_CREDIT_PARTIAL_PAYMENTS", False),
        shutdown_grace_ms=r.integer("BRIDGE_SHUTDOWN_GRACE_MS", 10_000, low=0, high=300_000),
        log_level=r.text("BRIDGE_LOG_LEVEL", "INFO").upper(),
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
    r.done()
    return settings


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
