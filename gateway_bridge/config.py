"""Bridge settings: read once from the environment at start-up, validated, frozen.

Each capability parses its own section (payments/settings.py, fx/settings.py,
wallet/settings.py, psp/settings.py, risk/settings.py, incidents/settings.py); this module
holds the process's own settings (listener, database pool, limits, shutdown, logging,
cashier clients), composes the sections into one `Settings`, and checks what spans
sections (budgets that must fit inside one another, TLS files, clients named twice).
Every problem is reported at once (service_kit.settings.SettingsError).

Secrets (wallet token, cashier API keys, PSP keys and webhook secrets) have no defaults and
never appear in repr() or logs; each can come from the variable itself or from a file named
by `<NAME>_FILE` (service_kit.settings.read_secret). Each default is written once, on its
dataclass field; the loaders read it from a default instance (`_DEFAULTS`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from gateway_bridge.aml import settings as aml_settings
from gateway_bridge.aml.settings import AmlSettings
from gateway_bridge.fx import settings as fx_settings
from gateway_bridge.fx.settings import FxSettings
from gateway_bridge.incidents import settings as incident_settings
from gateway_bridge.incidents.rules import IncidentPolicy
from gateway_bridge.kyc import settings as kyc_settings
from gateway_bridge.kyc.settings import KycSettings
from gateway_bridge.payments import settings as payment_settings
from gateway_bridge.payments.settings import PaymentSettings
from gateway_bridge.psp import settings as psp_settings
from gateway_bridge.psp.base import PspConfig
from gateway_bridge.risk import settings as risk_settings
from gateway_bridge.risk.rules import RiskPolicy
from gateway_bridge.routing import settings as routing_settings
from gateway_bridge.routing.settings import RoutingSettings
from gateway_bridge.wallet import settings as wallet_settings
from gateway_bridge.wallet.settings import WalletSettings
from service_kit.settings import EnvReader, SettingsError, read_secret

# Pool connections kept free of inbox workers, so webhooks are stored during a wallet outage.
WEBHOOK_CONNECTIONS_MIN = 2


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = field(repr=False)
    # How the bridge reaches the wallet (its token is a secret: no default).
    wallet: WalletSettings
    # sha256(api key) -> cashier client name
    clients_by_key_sha256: Mapping[bytes, str] = field(default_factory=dict, repr=False)
    psps: Mapping[str, PspConfig] = field(default_factory=dict)
    listen_addr: str = "127.0.0.1:8080"
    # host:port of the Prometheus /metrics listener; empty: no listener.
    metrics_addr: str = ""
    # Base URL PSPs reach us at; NOWPayments takes the IPN callback URL per payment.
    public_url: str = "http://127.0.0.1:8080"
    # TLS on the PSP/cashier listener (PEM files; both or neither). Version floor: TLS 1.2.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Request bodies above this get 413 before they are read (Adyen batches are the largest).
    body_size_max_bytes: int = 256 * 1024
    # A withdrawal spends a wallet call and a PSP call (with its retries) inside this.
    request_timeout_ms: int = 30_000
    db_pool_size_max: int = 8
    db_statement_timeout_ms: int = 5000
    # How long a use case waits for a pooled connection before it answers "unavailable".
    db_acquire_timeout_ms: int = 2000
    # Behind PgBouncer in transaction mode (before 1.21): no named prepared statements (0)
    # and no session settings at start-up (docs/SCALING.md).
    db_statement_cache_size: int = 100
    db_startup_settings: bool = True
    # Migrations take a session-level advisory lock, which PgBouncer in transaction mode
    # does not keep: behind one, run `gateway-bridge migrate` straight against Postgres.
    migrate_on_start: bool = True
    # Health probes of each PSP's API, and the metrics gauges read from Postgres; both run
    # only when the metrics listener is on (nobody would see them otherwise).
    probe_interval_ms: int = 30_000
    metrics_refresh_ms: int = 15_000
    shutdown_grace_ms: int = 10_000
    log_level: str = "INFO"
    # The inbox workers, the status sync and its schedule, pending limits, partial payments.
    payments: PaymentSettings = field(default_factory=PaymentSettings)
    # Fraud and risk rules (docs/RISK.md), and the cashier clients allowed to approve or
    # reject held payments over HTTP (none: only the use case / CLI can).
    risk: RiskPolicy = field(default_factory=RiskPolicy)
    risk_support_clients: frozenset[str] = frozenset()
    # Currency conversion (docs/FX.md).
    fx: FxSettings = field(default_factory=FxSettings)
    # Incident detection rules and how often they run (docs/INCIDENTS.md).
    incidents: IncidentPolicy = field(default_factory=IncidentPolicy)
    # PSP routing rules and learning (docs/ROUTING.md); no rules: the cashier names the PSP.
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    # Identity verification and its gates (docs/COMPLIANCE.md); off without a provider.
    kyc: KycSettings = field(default_factory=KycSettings)
    # Anti-money-laundering monitoring: rules, cases, withdrawal holds (docs/COMPLIANCE.md).
    aml: AmlSettings = field(default_factory=AmlSettings)


# Every field's default; the empty strings only fill the required fields and are never used.
_DEFAULTS = Settings(database_url="", wallet=WalletSettings(token=""))


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


def load(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    r = EnvReader(env)
    d = _DEFAULTS
    public_url = r.text("BRIDGE_PUBLIC_URL", d.public_url)
    keys_raw = read_secret(env, r, "BRIDGE_API_KEYS", required=True)
    # Right after the keys, as always: "no PSP enabled" is added only when nothing read
    # before it is wrong (a half-set PSP or missing keys say more).
    psps = psp_settings.load(env, r, public_url=public_url)
    settings = Settings(
        database_url=r.text("DATABASE_URL"),
        wallet=wallet_settings.load(env, r),
        clients_by_key_sha256=_clients(keys_raw, r) if keys_raw else {},
        psps=psps,
        listen_addr=r.text("BRIDGE_LISTEN_ADDR", d.listen_addr),
        metrics_addr=r.text("BRIDGE_METRICS_ADDR", d.metrics_addr),
        public_url=public_url,
        tls_cert_file=env.get("BRIDGE_TLS_CERT_FILE", d.tls_cert_file),
        tls_key_file=env.get("BRIDGE_TLS_KEY_FILE", d.tls_key_file),
        body_size_max_bytes=r.integer("BRIDGE_BODY_SIZE_MAX_BYTES", d.body_size_max_bytes,
                                      low=1024, high=8 * 1024 * 1024),
        request_timeout_ms=r.integer("BRIDGE_REQUEST_TIMEOUT_MS", d.request_timeout_ms,
                                     low=100, high=120_000),
        db_pool_size_max=r.integer("BRIDGE_DB_POOL_SIZE_MAX", d.db_pool_size_max, low=2,
                                   high=64),
        db_acquire_timeout_ms=r.integer("BRIDGE_DB_ACQUIRE_TIMEOUT_MS",
                                        d.db_acquire_timeout_ms, low=10, high=60_000),
        db_statement_timeout_ms=r.integer("BRIDGE_DB_STATEMENT_TIMEOUT_MS",
                                          d.db_statement_timeout_ms, low=100, high=600_000),
        db_statement_cache_size=r.integer("BRIDGE_DB_STATEMENT_CACHE_SIZE",
                                          d.db_statement_cache_size, low=0, high=10_000),
        db_startup_settings=r.flag("BRIDGE_DB_STARTUP_SETTINGS", d.db_startup_settings),
        migrate_on_start=r.flag("BRIDGE_MIGRATE_ON_START", d.migrate_on_start),
        probe_interval_ms=r.integer("BRIDGE_PROBE_INTERVAL_MS", d.probe_interval_ms,
                                    low=1000, high=3_600_000),
        metrics_refresh_ms=r.integer("BRIDGE_METRICS_REFRESH_MS", d.metrics_refresh_ms,
                                     low=1000, high=3_600_000),
        shutdown_grace_ms=r.integer("BRIDGE_SHUTDOWN_GRACE_MS", d.shutdown_grace_ms, low=0,
                                    high=300_000),
        log_level=r.text("BRIDGE_LOG_LEVEL", d.log_level).upper(),
        payments=payment_settings.load(env, r, psp_names=psps),
        risk=risk_settings.load(env, r),
        risk_support_clients=frozenset(
            c.strip() for c in env.get("BRIDGE_RISK_SUPPORT_CLIENTS", "").split(",")
            if c.strip()),
        fx=fx_settings.load(env, r),
        incidents=incident_settings.load(r),
        routing=routing_settings.load(env, r, psp_names=psps),
        kyc=kyc_settings.load(env, r, outbound=next(iter(psps.values()),
                                                              psp_settings.DEFAULTS)),
        aml=aml_settings.load(env, r),
    )
    _check_addresses(settings, r)
    _check_budgets(settings, r)
    _check_tls_files(settings, r)
    unknown = settings.risk_support_clients - set(settings.clients_by_key_sha256.values())
    if unknown and settings.clients_by_key_sha256:
        r.problems.append(f"BRIDGE_RISK_SUPPORT_CLIENTS: {', '.join(sorted(unknown))} not "
                          "named in BRIDGE_API_KEYS")
    r.done()
    return settings


def _check_addresses(s: Settings, r: EnvReader) -> None:
    if s.database_url and not s.database_url.startswith(("postgresql://", "postgres://")):
        r.problems.append("DATABASE_URL: must start with postgresql://")
    if ":" not in s.listen_addr:
        r.problems.append("BRIDGE_LISTEN_ADDR: expected host:port")
    if s.metrics_addr and not s.metrics_addr.rpartition(":")[2].isdigit():
        r.problems.append("BRIDGE_METRICS_ADDR: expected host:port")


def _check_budgets(s: Settings, r: EnvReader) -> None:
    """Limits of one section that must fit inside another's."""
    if s.payments.inbox_workers + WEBHOOK_CONNECTIONS_MIN > s.db_pool_size_max:
        r.problems.append(f"BRIDGE_INBOX_WORKERS: each worker can hold a connection through "
                          f"a wallet call; keep at least {WEBHOOK_CONNECTIONS_MIN} of "
                          f"BRIDGE_DB_POOL_SIZE_MAX ({s.db_pool_size_max}) for storing "
                          "webhooks")
    if s.risk.scoring_timeout_ms >= s.request_timeout_ms:
        r.problems.append("BRIDGE_RISK_SCORING_TIMEOUT_MS: must be below "
                          "BRIDGE_REQUEST_TIMEOUT_MS (the scorer is asked inside a request)")
    if s.fx.timeout_ms >= s.request_timeout_ms:
        r.problems.append("BRIDGE_FX_TIMEOUT_MS: must be below BRIDGE_REQUEST_TIMEOUT_MS (the "
                          "rates provider is asked inside a cashier request)")
    # An inbox worker waits for the rates provider inside its open transaction; the pool's
    # idle-in-transaction limit (gateway_bridge.server.create_pool: twice the larger of the
    # statement and wallet timeouts) would end its session. Half that window leaves the
    # other half as margin.
    fx_idle_max_ms = max(s.db_statement_timeout_ms, s.wallet.timeout_ms)
    if s.fx.timeout_ms > fx_idle_max_ms:
        r.problems.append(f"BRIDGE_FX_TIMEOUT_MS: {s.fx.timeout_ms} ms is above "
                          f"{fx_idle_max_ms} ms, the larger of BRIDGE_DB_STATEMENT_TIMEOUT_MS "
                          "and BRIDGE_WALLET_TIMEOUT_MS (an inbox worker asks the rates "
                          "provider inside its transaction, which the database ends after "
                          "twice that idle)")
    # The pins' own connection is waited for inside that transaction too (fx/pinning.py).
    if s.db_acquire_timeout_ms > fx_idle_max_ms:
        r.problems.append(f"BRIDGE_DB_ACQUIRE_TIMEOUT_MS: {s.db_acquire_timeout_ms} ms is above "
                          f"{fx_idle_max_ms} ms, the larger of BRIDGE_DB_STATEMENT_TIMEOUT_MS "
                          "and BRIDGE_WALLET_TIMEOUT_MS (an inbox worker waits for a pin's "
                          "connection inside its transaction)")


def _check_tls_files(s: Settings, r: EnvReader) -> None:
    for pair in (("BRIDGE_TLS_CERT_FILE", s.tls_cert_file, "BRIDGE_TLS_KEY_FILE",
                  s.tls_key_file),
                 ("BRIDGE_WALLET_TLS_CERT_FILE", s.wallet.tls_cert_file,
                  "BRIDGE_WALLET_TLS_KEY_FILE", s.wallet.tls_key_file)):
        if bool(pair[1]) != bool(pair[3]):
            r.problems.append(f"{pair[0]}/{pair[2]}: set both or neither")
    for name, path in (("BRIDGE_TLS_CERT_FILE", s.tls_cert_file),
                       ("BRIDGE_TLS_KEY_FILE", s.tls_key_file),
                       ("BRIDGE_WALLET_TLS_CA_FILE", s.wallet.tls_ca_file),
                       ("BRIDGE_WALLET_TLS_CERT_FILE", s.wallet.tls_cert_file),
                       ("BRIDGE_WALLET_TLS_KEY_FILE", s.wallet.tls_key_file)):
        if path and not Path(path).is_file():
            r.problems.append(f"{name}: {path} does not exist")


__all__ = ["Settings", "SettingsError", "load"]
