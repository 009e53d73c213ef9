"""Wallet settings: read once from the environment at start-up, validated, frozen.

Every bound and timeout is a named setting with a comment on what it costs. Secrets (the
callers' bearer tokens) have no defaults and never appear in repr() or logs; WALLET_CALLERS
can also come from the file WALLET_CALLERS_FILE names (service_kit.settings.read_secret).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from service_kit.settings import EnvReader, SettingsError, read_secret

SCOPES = frozenset({"game", "bonus", "payments", "support", "read", "limits", "compliance"})


@dataclass(frozen=True, slots=True)
class Caller:
    """A calling service: its name (idempotency keys are scoped to it) and its scopes."""

    name: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)  # "" turns the Redis fast path off
    listen_addr: str = "127.0.0.1:50051"
    # sha256(token) -> caller; only digests are kept in memory after start-up.
    callers_by_token_sha256: Mapping[bytes, Caller] = field(default_factory=dict, repr=False)
    # Few connections per core: more only queue longer on hot rows (docs/ARCHITECTURE.md,
    # "Rules the numbers set").
    db_pool_size_min: int = 2
    db_pool_size_max: int = 8
    db_pool_acquire_timeout_ms: int = 1000
    # Server-side safety net; the request deadline usually ends a call first.
    db_statement_timeout_ms: int = 5000
    db_connect_timeout_ms: int = 3000
    # Behind PgBouncer in transaction mode (before 1.21): no named prepared statements (0)
    # and no session settings at start-up (docs/SCALING.md).
    db_statement_cache_size: int = 100
    db_startup_settings: bool = True
    redis_timeout_ms: int = 50
    idempotency_ttl_s: int = 86_400
    # Recent outcomes kept in the process in front of Redis (0: none); ~1 KiB each.
    replay_cache_entries_max: int = 8192
    # Upper bound on a call's time even when the client sets no deadline.
    request_timeout_ms: int = 5000
    # grpc.aio refuses calls past this many in flight with RESOURCE_EXHAUSTED.
    concurrent_rpcs_max: int = 256
    # Per-caller token bucket (requests a second, 0: off; burst 0: one second's worth).
    # Off by default: the callers are a few trusted internal services whose volume is
    # governed upstream, and a cap set without measuring their peaks would refuse real
    # traffic (a tournament's last second) long before the process is at risk; the
    # concurrency cap above already protects the process. Set it from measured peaks.
    rate_limit_rps: int = 0
    rate_limit_burst: int = 0
    message_size_max_bytes: int = 64 * 1024
    conflict_retries_max: int = 3
    shutdown_grace_ms: int = 10_000
    bonus_sweep_interval_ms: int = 5_000
    bonus_sweep_batch_max: int = 100
    # Group commit: concurrent calls share one transaction (one commit, one WAL flush).
    group_commit: bool = True
    # Calls per batch: a batch forms from the calls waiting while every slot is busy.
    group_commit_batch_max: int = 64
    # Batches in flight at once, each holding one pool connection.
    group_commit_batches_max: int = 4
    # ExecuteBatch: operations per call.
    batch_operations_max: int = 1000
    migrate_on_start: bool = False
    # Several server processes may share the listen port (SO_REUSEPORT), one per core.
    so_reuseport: bool = False
    # Connections older than this are closed gracefully (after a grace for calls in flight),
    # so clients balancing over a headless Service re-resolve and reach new replicas.
    max_connection_age_ms: int = 300_000
    # host:port of the Prometheus /metrics listener; empty: no listener.
    metrics_addr: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # PEM CA bundle: set, the server requires a client certificate signed by it (mTLS).
    tls_client_ca_file: str = ""
    log_level: str = "INFO"


def _callers(raw: str, reader: EnvReader) -> dict[bytes, Caller]:
    """WALLET_CALLERS: {"<service>": {"token": "...", "scopes": ["game", "read"]}, ...}."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        reader.problems.append("WALLET_CALLERS: not valid JSON (expected "
                               '{"service": {"token": "...", "scopes": [...]}})')
        return {}
    if not isinstance(parsed, dict) or not parsed:
        reader.problems.append("WALLET_CALLERS: expected a non-empty JSON object of services")
        return {}
    callers: dict[bytes, Caller] = {}
    for name, spec in parsed.items():
        token = spec.get("token") if isinstance(spec, dict) else None
        scopes = spec.get("scopes") if isinstance(spec, dict) else None
        if not isinstance(token, str) or len(token) < 16:
            reader.problems.append(f"WALLET_CALLERS[{name}].token: a string of 16+ characters")
            continue
        if not isinstance(scopes, list) or not scopes or not set(scopes) <= SCOPES:
            reader.problems.append(f"WALLET_CALLERS[{name}].scopes: a non-empty list of "
                                   f"{sorted(SCOPES)}")
            continue
        digest = hashlib.sha256(token.encode()).digest()
        if digest in callers:
            reader.problems.append(f"WALLET_CALLERS[{name}].token: shared with another service")
        callers[digest] = Caller(str(name), frozenset(scopes))
    return callers


def load(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    r = EnvReader(env)
    callers_raw = read_secret(env, r, "WALLET_CALLERS", required=True)
    settings = Settings(
        database_url=r.text("DATABASE_URL"),
        redis_url=env.get("REDIS_URL", ""),
        listen_addr=r.text("WALLET_LISTEN_ADDR", "127.0.0.1:50051"),
        callers_by_token_sha256=_callers(callers_raw, r) if callers_raw else {},
        db_pool_size_min=r.integer("WALLET_DB_POOL_SIZE_MIN", 2, low=1, high=64),
        db_pool_size_max=r.integer("WALLET_DB_POOL_SIZE_MAX", 8, low=1, high=64),
        db_pool_acquire_timeout_ms=r.integer("WALLET_DB_POOL_ACQUIRE_TIMEOUT_MS", 1000,
                                             low=10, high=60_000),
        db_statement_timeout_ms=r.integer("WALLET_DB_STATEMENT_TIMEOUT_MS", 5000,
                                          low=100, high=600_000),
        db_connect_timeout_ms=r.integer("WALLET_DB_CONNECT_TIMEOUT_MS", 3000, low=100,
                                        high=60_000),
        db_statement_cache_size=r.integer("WALLET_DB_STATEMENT_CACHE_SIZE", 100, low=0,
                                          high=10_000),
        db_startup_settings=r.flag("WALLET_DB_STARTUP_SETTINGS", True),
        redis_timeout_ms=r.integer("WALLET_REDIS_TIMEOUT_MS", 50, low=1, high=5000),
        idempotency_ttl_s=r.integer("WALLET_IDEMPOTENCY_TTL_S", 86_400, low=60,
                                    high=90 * 86_400),
        replay_cache_entries_max=r.integer("WALLET_REPLAY_CACHE_ENTRIES_MAX", 8192, low=0,
                                           high=1_000_000),
        request_timeout_ms=r.integer("WALLET_REQUEST_TIMEOUT_MS", 5000, low=10, high=120_000),
        concurrent_rpcs_max=r.integer("WALLET_CONCURRENT_RPCS_MAX", 256, low=1, high=100_000),
        rate_limit_rps=r.integer("WALLET_RATE_LIMIT_RPS", 0, low=0, high=1_000_000),
        rate_limit_burst=r.integer("WALLET_RATE_LIMIT_BURST", 0, low=0, high=10_000_000),
        message_size_max_bytes=r.integer("WALLET_MESSAGE_SIZE_MAX_BYTES", 64 * 1024,
                                         low=1024, high=16 * 1024 * 1024),
        conflict_retries_max=r.integer("WALLET_CONFLICT_RETRIES_MAX", 3, low=0, high=10),
        shutdown_grace_ms=r.integer("WALLET_SHUTDOWN_GRACE_MS", 10_000, low=0, high=300_000),
        bonus_sweep_interval_ms=r.integer("WALLET_BONUS_SWEEP_INTERVAL_MS", 5000, low=100,
                                          high=3_600_000),
        bonus_sweep_batch_max=r.integer("WALLET_BONUS_SWEEP_BATCH_MAX", 100, low=1,
                                        high=10_000),
        group_commit=r.flag("WALLET_GROUP_COMMIT", True),
        group_commit_batch_max=r.integer("WALLET_GROUP_COMMIT_BATCH_MAX", 64, low=1,
                                         high=1000),
        group_commit_batches_max=r.integer("WALLET_GROUP_COMMIT_BATCHES_MAX", 4, low=1,
                                           high=64),
        batch_operations_max=r.integer("WALLET_BATCH_OPERATIONS_MAX", 1000, low=1,
                                       high=10_000),
        migrate_on_start=r.flag("WALLET_MIGRATE_ON_START", False),
        so_reuseport=r.flag("WALLET_SO_REUSEPORT", False),
        max_connection_age_ms=r.integer("WALLET_MAX_CONNECTION_AGE_MS", 300_000, low=10_000,
                                        high=86_400_000),
        metrics_addr=env.get("WALLET_METRICS_ADDR", ""),
        tls_cert_file=env.get("WALLET_TLS_CERT_FILE", ""),
        tls_key_file=env.get("WALLET_TLS_KEY_FILE", ""),
        tls_client_ca_file=env.get("WALLET_TLS_CLIENT_CA_FILE", ""),
        log_level=r.text("WALLET_LOG_LEVEL", "INFO").upper(),
    )
    _cross_checks(settings, r)
    r.done()
    return settings


def _cross_checks(s: Settings, r: EnvReader) -> None:
    if s.database_url and not s.database_url.startswith(("postgresql://", "postgres://")):
        r.problems.append("DATABASE_URL: must start with postgresql://")
    if s.redis_url and not s.redis_url.startswith(("redis://", "rediss://", "unix://",
                                                   "redis+cluster://", "rediss+cluster://")):
        r.problems.append("REDIS_URL: must start with redis://, rediss://, unix://, or "
                          "redis+cluster:// for a Redis Cluster")
    elif s.redis_url.startswith(("redis+cluster://", "rediss+cluster://")) \
            and not cluster_nodes(s.redis_url):
        r.problems.append("REDIS_URL: redis+cluster://host:port[,host:port...] names at "
                          "least one node")
    if s.group_commit and s.group_commit_batches_max > s.db_pool_size_max:
        r.problems.append("WALLET_GROUP_COMMIT_BATCHES_MAX: larger than WALLET_DB_POOL_SIZE_MAX "
                          "(each batch in flight holds a connection)")
    if s.db_pool_size_min > s.db_pool_size_max:
        r.problems.append("WALLET_DB_POOL_SIZE_MIN: larger than WALLET_DB_POOL_SIZE_MAX")
    if ":" not in s.listen_addr:
        r.problems.append("WALLET_LISTEN_ADDR: expected host:port")
    if s.metrics_addr and not s.metrics_addr.rpartition(":")[2].isdigit():
        r.problems.append("WALLET_METRICS_ADDR: expected host:port")
    if bool(s.tls_cert_file) != bool(s.tls_key_file):
        r.problems.append("WALLET_TLS_CERT_FILE/WALLET_TLS_KEY_FILE: set both or neither")
    if s.tls_client_ca_file and not s.tls_cert_file:
        r.problems.append("WALLET_TLS_CLIENT_CA_FILE: client certificates need TLS; set "
                          "WALLET_TLS_CERT_FILE and WALLET_TLS_KEY_FILE too")
    if s.rate_limit_burst and not s.rate_limit_rps:
        r.problems.append("WALLET_RATE_LIMIT_BURST: has no effect while WALLET_RATE_LIMIT_RPS "
                          "is 0 (off); set the rate too, or drop the burst")
    for name, path in (("WALLET_TLS_CERT_FILE", s.tls_cert_file),
                       ("WALLET_TLS_KEY_FILE", s.tls_key_file),
                       ("WALLET_TLS_CLIENT_CA_FILE", s.tls_client_ca_file)):
        if path and not Path(path).is_file():
            r.problems.append(f"{name}: {path} does not exist")
    if s.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        r.problems.append("WALLET_LOG_LEVEL: one of DEBUG, INFO, WARNING, ERROR")


def cluster_nodes(redis_url: str) -> list[tuple[str, int]] | None:
    """The nodes a `redis+cluster://h1:p1,h2:p2` (or `rediss+cluster://`) URL names, where
    the client starts to learn the cluster; None for a URL of one server. An empty list: the
    URL names no usable node."""
    scheme, sep, rest = redis_url.partition("://")
    if not sep or scheme not in ("redis+cluster", "rediss+cluster"):
        return None
    nodes = []
    for part in rest.split("/", 1)[0].split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            return []
        nodes.append((host, int(port)))
    return nodes


__all__ = ["SCOPES", "cluster_nodes", "Caller", "Settings", "SettingsError", "load"]
