"""`wallet-core` command line: serve, migrate, check, health, demo."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service_kit import logs
from service_kit.migrations import MigrationError, migrate
from service_kit.pg import database_url_from_env
from service_kit.settings import SettingsError
from wallet_core import config
from wallet_core.db import connect
from wallet_core.server import CITUS_MIGRATIONS, MIGRATIONS, SERVICE_NAME, serve
from wallet_core.storage.checker import check_ledger


async def _migrate(*, citus: bool) -> int:
    conn = await connect(database_url_from_env())
    try:
        applied = await migrate(conn, schema="wallet", folder=MIGRATIONS)
        # The Citus variant keeps its own record (schema wallet_citus): its numbers are its own.
        distributed = (await migrate(conn, schema="wallet_citus", folder=CITUS_MIGRATIONS)
                       if citus else [])
    finally:
        await conn.close()
    print(f"applied migrations: {applied}" if applied else "schema is up to date")
    if citus:
        print(f"applied Citus migrations: {distributed}" if distributed
              else "Citus distribution is up to date")
    return 0


async def _check() -> int:
    conn = await connect(database_url_from_env())
    try:
        problems = await check_ledger(conn)
    finally:
        await conn.close()
    if problems:
        print(f"ledger check FAILED: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print("ledger check: OK (every currency sums to zero, every bucket matches its postings)")
    return 0


HEALTH_TIMEOUT_S = 3.0


async def _health(addr: str, tls_ca: bytes | None) -> int:
    """Container and orchestrator probes: 0 when the wallet's gRPC health service says
    SERVING for the wallet service, 1 otherwise (down, draining, unreachable)."""
    if tls_ca is not None:
        channel = grpc.aio.secure_channel(addr, grpc.ssl_channel_credentials(tls_ca))
    else:
        channel = grpc.aio.insecure_channel(addr)
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=HEALTH_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            print(f"wallet at {addr}: {exc.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"wallet at {addr}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


async def _serve() -> int:
    settings = config.load()
    logs.configure(settings.log_level)
    await serve(settings)
    return 0


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        return uvloop.run(coro)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    except MigrationError as exc:
        print(f"migration failed: {exc}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError) as exc:
        # asyncpg/redis connection failures: say where, never echo the URL (it may hold a password)
        print(f"cannot reach a required service: {type(exc).__name__}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wallet-core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the gRPC service (configured by environment variables)")
    mig = sub.add_parser("migrate", help="apply pending database migrations (safe to run twice)")
    mig.add_argument("--citus", action="store_true",
                     help="then distribute the ledger by player on Citus (docs/SCALING.md)")
    sub.add_parser("check", help="verify the ledger's invariants; exit 1 listing problems")
    probe = sub.add_parser("health", help="ask a running wallet's gRPC health service; exit 0 "
                                          "when SERVING (container health checks)")
    probe.add_argument("--addr", default=os.environ.get("WALLET_TARGET", "127.0.0.1:50051"))
    probe.add_argument("--tls-ca", default=os.environ.get("WALLET_HEALTH_TLS_CA_FILE", ""),
                       help="CA certificate file when the wallet serves TLS")
    demo = sub.add_parser("demo", help="run a short scripted session against a running wallet")
    demo.add_argument("--target", default=os.environ.get("WALLET_TARGET", "127.0.0.1:50051"))
    args = parser.parse_args(argv)
    if args.command == "serve":
        sys.exit(_run(_serve()))
    if args.command == "migrate":
        sys.exit(_run(_migrate(citus=args.citus)))
    if args.command == "check":
        sys.exit(_run(_check()))
    if args.command == "health":
        ca = Path(args.tls_ca).read_bytes() if args.tls_ca else None
        sys.exit(_run(_health(args.addr, ca)))
    from wallet_core.demo import run_demo
    sys.exit(_run(run_demo(args.target)))
