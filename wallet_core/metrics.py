"""Prometheus metrics of the wallet, and the listener that serves them on their own port.

Defined once per process (Prometheus' default registry); recorded at the edges that already
see every call: the servicer's one logging point for RPC outcomes, the group-commit runner
for batch sizes. The listener is prometheus-client's own small HTTP server in a thread, so a
scrape never waits on the event loop that serves money.
"""

from __future__ import annotations

from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_REQUESTS = Counter("wallet_rpc_requests", "RPCs answered, by method and status code",
                       ["method", "code"])
# Buckets from sub-millisecond (replays) to the request timeout's order of magnitude.
RPC_DURATION = Histogram("wallet_rpc_duration_seconds", "Time to answer an RPC", ["method"],
                         buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                  0.5, 1.0, 2.5, 5.0))
REPLAYS = Counter("wallet_replays", "Answers that replayed an earlier outcome of the same key")
GROUP_COMMIT_BATCH_SIZE = Histogram(
    "wallet_group_commit_batch_size", "Calls sharing one group-commit transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
DB_POOL_CONNECTIONS = Gauge("wallet_db_pool_connections",
                            "Postgres pool connections, by state", ["state"])
REDIS_WRITES_SKIPPED = Counter(
    "wallet_redis_writes_skipped",
    "Batches whose outcomes were not cached in Redis: too many cache writes in flight")
REDIS_AVAILABLE = Gauge("wallet_redis_available",
                        "1 while the idempotency cache uses Redis, 0 while it is skipped")


def rpc_answered(method: str, code: str, duration_s: float, *, replay: bool) -> None:
    RPC_REQUESTS.labels(method, code).inc()
    RPC_DURATION.labels(method).observe(duration_s)
    if replay:
        REPLAYS.inc()


def watch_pool(size: Callable[[], int], idle: Callable[[], int],
               redis_usable: Callable[[], bool]) -> None:
    """Gauges read at scrape time from the running server's pool and cache."""
    DB_POOL_CONNECTIONS.labels("idle").set_function(lambda: float(idle()))
    DB_POOL_CONNECTIONS.labels("in_use").set_function(lambda: float(size() - idle()))
    REDIS_AVAILABLE.set_function(lambda: 1.0 if redis_usable() else 0.0)


def serve_metrics(addr: str) -> WSGIServer:
    """Start the /metrics listener on host:port; the caller shuts it down."""
    host, _, port = addr.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0")
    return server
