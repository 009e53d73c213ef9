"""The wallet process: build the pool, cache, operations and gRPC server; run until SIGTERM.

Shutdown on SIGTERM/SIGINT: health goes NOT_SERVING, the server stops accepting and gives
in-flight calls `shutdown_grace_ms` to finish, then background tasks stop and the pools close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg
import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # health.aio, for type checkers
from redis.asyncio.cluster import ClusterNode, RedisCluster
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

from service_kit.migrations import migrate
from service_kit.serving import serve_until_signalled
from wallet_core import metrics
from wallet_core.api.reflection import enable_reflection
from wallet_core.api.servicer import WalletServicer
from wallet_core.config import Settings, cluster_nodes
from wallet_core.db import create_pool
from wallet_core.idempotency_cache import IdempotencyCache
from wallet_core.operations import GroupCommitSettings, Operations
from wallet_core.operations.front import utc_now
from wallet_core.reads import Reads
from wallet_core.storage import repo

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "storage" / "migrations"
CITUS_MIGRATIONS = Path(__file__).parent / "storage" / "citus"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WalletService"].full_name


@dataclass
class Running:
    server: grpc.aio.Server
    port: int
    operations: Operations
    health: HealthServicer
    pool: asyncpg.Pool
    metrics_port: int | None = None


def _redis_client(settings: Settings) -> aioredis.Redis | RedisCluster | None:
    if not settings.redis_url:
        return None
    timeout_s = settings.redis_timeout_ms / 1000
    nodes = cluster_nodes(settings.redis_url)
    if nodes is not None:
        # Any reachable node tells the client the rest of the cluster and who holds which
        # slot; after a failover the first error makes it ask again.
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes],
                            ssl=settings.redis_url.startswith("rediss+cluster://"),
                            socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                            max_connections=64, require_full_coverage=False)
    return aioredis.from_url(settings.redis_url, socket_timeout=timeout_s,
                             socket_connect_timeout=timeout_s, retry_on_timeout=False,
                             max_connections=64, health_check_interval=30)


@contextlib.asynccontextmanager
async def running(settings: Settings, *,
                  clock: Callable[[], datetime] = utc_now) -> AsyncIterator[Running]:
    """Start everything on the running loop; stop it gracefully on exit. `clock`: the time
    the rules see (tests move it to cross a cooling-off or a period)."""
    pool = await create_pool(settings)
    cache = IdempotencyCache(_redis_client(settings), ttl_s=settings.idempotency_ttl_s,
                             timeout_ms=settings.redis_timeout_ms,
                             recent_entries_max=settings.replay_cache_entries_max)
    try:
        async with pool.acquire() as conn:
            if settings.migrate_on_start:
                await migrate(conn, schema="wallet", folder=MIGRATIONS)
            currencies = await repo.load_currencies(conn)
            cache.namespace = await repo.instance_id(conn)
        group = GroupCommitSettings(
            batch_max=settings.group_commit_batch_max,
            batches_max=settings.group_commit_batches_max) if settings.group_commit else None
        operations = Operations(pool=pool, cache=cache, currencies=currencies,
                                pool_acquire_timeout_ms=settings.db_pool_acquire_timeout_ms,
                                conflict_retries_max=settings.conflict_retries_max,
                                group_commit=group, clock=clock)
        reads = Reads(pool, pool_acquire_timeout_ms=settings.db_pool_acquire_timeout_ms)
        server, port, health_servicer = await _start_server(settings, operations, reads)
        sweeper = asyncio.create_task(_sweep_bonuses(operations, settings), name="bonus-sweeper")
        listener = None
        if settings.metrics_addr:
            metrics.watch_pool(pool.get_size, pool.get_idle_size, cache.redis_usable)
            listener = metrics.serve_metrics(settings.metrics_addr)
        try:
            yield Running(server, port, operations, health_servicer, pool,
                          listener.server_port if listener else None)
        finally:
            if listener is not None:
                listener.shutdown()
                listener.server_close()
            await health_servicer.enter_graceful_shutdown()
            await server.stop(settings.shutdown_grace_ms / 1000)
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await operations.close()
    finally:
        await cache.close()
        await asyncio.wait_for(pool.close(), timeout=settings.shutdown_grace_ms / 1000 + 5)


# How far past WALLET_MESSAGE_SIZE_MAX_BYTES a request is still read (and refused with
# details) before gRPC refuses it without reading it.
TRANSPORT_SIZE_FACTOR = 4
# The shortest keepalive ping interval accepted from a client (wallet_client uses 30 s).
KEEPALIVE_PING_MIN_MS = 10_000


async def _start_server(settings: Settings, operations: Operations,
                        reads: Reads) -> tuple[grpc.aio.Server, int, HealthServicer]:
    size = settings.message_size_max_bytes
    server = grpc.aio.server(
        maximum_concurrent_rpcs=settings.concurrent_rpcs_max,
        # The servicer refuses requests over `size` with ErrorInfo MESSAGE_TOO_LARGE; gRPC
        # itself refuses (with no details) only past this cap, which bounds what one request
        # may make the server read and parse.
        options=[("grpc.max_receive_message_length", TRANSPORT_SIZE_FACTOR * size),
                 ("grpc.max_send_message_length", 4 * size),
                 # Off unless asked: two servers on one port is a deliberate choice.
                 ("grpc.so_reuseport", 1 if settings.so_reuseport else 0),
                 ("grpc.max_connection_age_ms", settings.max_connection_age_ms),
                 ("grpc.max_connection_age_grace_ms", settings.shutdown_grace_ms),
                 # Clients' keepalive pings on idle connections (wallet_client pings every
                 # 30 s) are welcome; by default gRPC answers them with GOAWAY
                 # "too_many_pings" and the client's connection churns.
                 ("grpc.keepalive_permit_without_calls", 1),
                 ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_PING_MIN_MS)])
    pb_grpc.add_WalletServiceServicer_to_server(  # type: ignore[no-untyped-call]
        WalletServicer(operations, reads, settings), server)
    # The asyncio servicer: the threaded one parks a worker thread of the loop's executor in
    # every Watch stream (unauthenticated), which can starve it and hang shutdown.
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # Reflection v1 and v1alpha (api/reflection.py), so grpcurl and Postman need no protos.
    enable_reflection(server, [SERVICE_NAME,
                               health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    if settings.tls_cert_file:
        port = server.add_secure_port(settings.listen_addr, _tls_credentials(settings))
    else:
        port = server.add_insecure_port(settings.listen_addr)
    if port == 0:
        raise OSError(f"cannot listen on {settings.listen_addr}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health_servicer


def _tls_credentials(settings: Settings) -> grpc.ServerCredentials:
    """Read once at start-up, before serving (a blocking read is fine here).

    With WALLET_TLS_CLIENT_CA_FILE the handshake itself refuses a client without a
    certificate signed by that CA (mutual TLS), before any call or token is looked at; the
    bearer token still names the caller and its scopes.
    """
    key = Path(settings.tls_key_file).read_bytes()
    cert = Path(settings.tls_cert_file).read_bytes()
    if not settings.tls_client_ca_file:
        return grpc.ssl_server_credentials([(key, cert)])
    client_ca = Path(settings.tls_client_ca_file).read_bytes()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=True)


async def _sweep_bonuses(operations: Operations, settings: Settings) -> None:
    """Expire due bonuses in bounded batches; failures are logged and retried next round."""
    while True:
        await asyncio.sleep(settings.bonus_sweep_interval_ms / 1000)
        try:
            await operations.expire_due_bonuses(settings.bonus_sweep_batch_max)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("bonus sweep failed; will retry", extra={"error": type(exc).__name__})
        except Exception:  # a background loop must survive a bug in one round; logged loudly
            log.exception("bonus sweep failed unexpectedly")


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then drain (see the module docstring)."""
    await serve_until_signalled(
        running(settings), name="wallet-core", log=log, grace_ms=settings.shutdown_grace_ms,
        details=lambda run: {
            "listen": settings.listen_addr, "port": run.port,
            "tls": bool(settings.tls_cert_file), "mtls": bool(settings.tls_client_ca_file),
            "rate_limit_rps": settings.rate_limit_rps})
