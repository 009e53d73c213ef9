"""The bridge process: database pool (and migrations), wallet client, PSP adapters, the HTTP
listener, the inbox workers and the status sync, started and stopped together.

Shutdown order: stop accepting HTTP, give in-flight requests the grace period, cancel the
workers (an event being applied rolls back and stays pending: nothing is lost), then close
the PSP clients, the wallet channel and the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
from aiohttp import web

from gateway_bridge import metrics
from gateway_bridge.aml import store as aml_store
from gateway_bridge.aml.rules import AmlPolicy
from gateway_bridge.aml.service import AmlService
from gateway_bridge.config import Settings
from gateway_bridge.fx.rates import FxRates
from gateway_bridge.http import app as http_app
from gateway_bridge.http import risk as http_risk
from gateway_bridge.http import webhooks
from gateway_bridge.http.context import Services
from gateway_bridge.incidents import probes
from gateway_bridge.incidents.detector import Detector
from gateway_bridge.incidents.rejections import RejectionLog
from gateway_bridge.kyc.service import KycService
from gateway_bridge.payments import gauges
from gateway_bridge.payments.cashier import Payments
from gateway_bridge.payments.inbox import Inbox
from gateway_bridge.payments.review import Reviews
from gateway_bridge.payments.status_sync import StatusSync
from gateway_bridge.psp.registry import build_adapters
from gateway_bridge.risk.service import RiskService
from gateway_bridge.routing.learning import Health
from gateway_bridge.routing.service import Router
from gateway_bridge.wallet.client import WalletClient
from service_kit import pg
from service_kit.migrations import migrate
from service_kit.pg import init_json_codecs, session_settings
from service_kit.serving import serve_until_signalled

log = logging.getLogger("gateway_bridge.server")
MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA = "bridge"
# How often webhook rejection counts go from memory to bridge.webhook_rejections.
REJECTION_FLUSH_MS = 1000


@dataclass(frozen=True, slots=True)
class Running:
    port: int
    services: Services
    pool: asyncpg.Pool
    reviews: Reviews | None = None
    metrics_port: int | None = None
    detector: Detector | None = None


def listener_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for the PSP/cashier listener, or None (plaintext, e.g. behind a TLS proxy).

    TLS 1.2 is the floor: PSPs (Stripe, Adyen) deliver webhooks only over TLS 1.2+, and the
    versions below it have known attacks. Cipher choice is left to OpenSSL's secure defaults.
    """
    if not settings.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


async def create_pool(settings: Settings) -> asyncpg.Pool:
    # A worker holds a transaction open across one wallet call; the idle-in-transaction
    # limit must outlast that call's deadline.
    idle_ms = max(settings.db_statement_timeout_ms, settings.wallet.timeout_ms) * 2
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=1, max_size=settings.db_pool_size_max,
        init=init_json_codecs, timeout=3.0,
        command_timeout=settings.db_statement_timeout_ms / 1000,
        statement_cache_size=settings.db_statement_cache_size,
        server_settings=session_settings(
            "gateway-bridge", statement_timeout_ms=settings.db_statement_timeout_ms,
            idle_in_transaction_ms=idle_ms, startup_settings=settings.db_startup_settings))
    assert pool is not None
    return pool


async def migrate_database(database_url: str) -> list[int]:
    conn = await asyncpg.connect(database_url, timeout=3.0)
    try:
        return await migrate(conn, schema=SCHEMA, folder=MIGRATIONS)
    finally:
        await conn.close()


async def aml_policy(pool: asyncpg.Pool, policy: AmlPolicy) -> AmlPolicy:
    """The AML policy as this deployment can run it: the little-play rule reads the wallet's
    journal, so where the bridge's database does not hold the wallet's tables it is off,
    said loudly at start-up rather than failing every withdrawal."""
    if not policy.little_play_percent:
        return policy
    async with pool.acquire(timeout=5.0) as conn:
        readable = await aml_store.wallet_journal_readable(conn)
    if readable:
        return policy
    log.error("AML_LITTLE_PLAY is off: the bridge cannot read the wallet's journal in its "
              "database (run the bridge on the wallet's database with SELECT on wallet.journal, "
              "postings and wallets, or set BRIDGE_AML_LITTLE_PLAY_PERCENT=0 to say so)")
    return replace(policy, little_play_percent=0)


@contextlib.asynccontextmanager
async def running(settings: Settings, *, migrate_first: bool = True,
                  workers: bool = True) -> AsyncIterator[Running]:
    if migrate_first:
        await migrate_database(settings.database_url)
    pool = await create_pool(settings)
    to_wallet = settings.wallet
    wallet = WalletClient(addr=to_wallet.addr, token=to_wallet.token,
                          timeout_ms=to_wallet.timeout_ms, tls_ca_file=to_wallet.tls_ca_file,
                          tls_cert_file=to_wallet.tls_cert_file,
                          tls_key_file=to_wallet.tls_key_file)
    adapters = build_adapters(settings.psps)
    rates = FxRates(url=settings.fx.rates_url, timeout_ms=settings.fx.timeout_ms,
                    age_max_ms=settings.fx.rate_age_max_ms, spread_bps=settings.fx.spread_bps)
    acquire_timeout_ms = settings.db_acquire_timeout_ms
    # The probes' latest verdict per PSP (True: up), shared with the router.
    probes_up: dict[str, bool] = {}
    router = Router(pool=pool, settings=settings.routing, acquire_timeout_ms=acquire_timeout_ms,
                    health=lambda psp: Health(breaker_open=not adapters[psp].available,
                                              probe_down=not probes_up.get(psp, True)))
    inbox = Inbox(pool=pool, wallet=wallet, settings=settings.payments,
                  wallet_timeout_ms=to_wallet.timeout_ms, acquire_timeout_ms=acquire_timeout_ms,
                  rates=rates, router=router)
    risk = RiskService(pool=pool, policy=settings.risk, acquire_timeout_ms=acquire_timeout_ms)
    kyc = KycService(pool=pool, settings=settings.kyc, acquire_timeout_ms=acquire_timeout_ms,
                     wallet=wallet)
    aml = (AmlService(pool=pool, policy=await aml_policy(pool, settings.aml.policy),
                      acquire_timeout_ms=acquire_timeout_ms) if settings.aml.enabled else None)
    payments = Payments(pool=pool, wallet=wallet, adapters=adapters,
                        settings=settings.payments, psps=settings.psps,
                        acquire_timeout_ms=acquire_timeout_ms, wake_inbox=inbox.wake,
                        risk=risk, rates=rates, router=router, kyc=kyc, aml=aml)
    reviews = Reviews(pool=pool, wallet=wallet, payments=payments, settings=settings.payments,
                      psps=settings.psps, acquire_timeout_ms=acquire_timeout_ms)
    sync = StatusSync(pool=pool, payments=payments, inbox=inbox, adapters=adapters,
                      settings=settings.payments, acquire_timeout_ms=acquire_timeout_ms)
    detector = Detector(pool=pool, policy=settings.incidents, adapters=adapters,
                        probe_interval_ms=settings.probe_interval_ms,
                        timeout_ms=settings.db_statement_timeout_ms)
    services = Services(settings=settings,
                        rejections=RejectionLog(pool, acquire_timeout_ms=acquire_timeout_ms),
                        payments=payments, inbox=inbox,
                        sync=sync, adapters=adapters,
                        clients_by_key_sha256=settings.clients_by_key_sha256, kyc=kyc)
    app = http_app.build(services)
    http_risk.add_routes(app, reviews)
    runner = web.AppRunner(app, access_log=None,
                           shutdown_timeout=settings.shutdown_grace_ms / 1000)
    await runner.setup()
    host, _, port = settings.listen_addr.rpartition(":")
    site = web.TCPSite(runner, host, int(port), reuse_address=True,
                       ssl_context=listener_tls_context(settings))
    tasks: list[asyncio.Task[None]] = []
    metrics_runner = web.AppRunner(metrics.build_app(), access_log=None)
    try:
        await site.start()
        bound = int(port)
        for address in runner.addresses:  # the real port when listen_addr asked for port 0
            bound = int(address[1])
        metrics_port = None
        if settings.metrics_addr:
            await metrics_runner.setup()
            m_host, _, m_port = settings.metrics_addr.rpartition(":")
            await web.TCPSite(metrics_runner, m_host, int(m_port), reuse_address=True).start()
            metrics_port = int(metrics_runner.addresses[0][1])
        tasks = [asyncio.create_task(
            webhooks.flush_rejections_forever(services, interval_ms=REJECTION_FLUSH_MS),
            name="rejection-counts")]
        if workers:
            tasks += [asyncio.create_task(inbox.run(), name="inbox"),
                      asyncio.create_task(sync.run(), name="status-sync")]
        detecting = workers and settings.incidents.enabled
        # The probes feed the gauges, the gateway-downtime rule and routing: they run when
        # any of them is on.
        if metrics_port is not None or detecting or settings.routing.enabled:
            tasks.append(asyncio.create_task(probes.probe_forever(
                adapters, interval_ms=settings.probe_interval_ms, pool=pool,
                timeout_ms=settings.db_statement_timeout_ms, state=probes_up),
                name="psp-probes"))
        if metrics_port is not None:
            tasks.append(asyncio.create_task(gauges.refresh_forever(
                pool, interval_ms=settings.metrics_refresh_ms,
                timeout_ms=settings.db_statement_timeout_ms), name="metrics-refresh"))
        if detecting:
            tasks.append(asyncio.create_task(detector.run(), name="incident-detector"))
        if workers and kyc.enabled:
            tasks.append(asyncio.create_task(kyc.run_polls(settings.kyc.poll_interval_ms),
                                             name="kyc-poller"))
        yield Running(port=bound, services=services, pool=pool, metrics_port=metrics_port,
                      reviews=reviews, detector=detector)
    finally:
        await metrics_runner.cleanup()
        await runner.cleanup()
        with contextlib.suppress(*pg.DB_ERRORS):
            await webhooks.flush_rejections(services)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for adapter in adapters.values():
            await adapter.close()
        await risk.close()
        await kyc.close()
        await rates.close()
        await wallet.close()
        await pool.close()


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then stop in the order the module docstring gives."""
    await serve_until_signalled(
        running(settings, migrate_first=settings.migrate_on_start), name="gateway-bridge",
        log=log,
        grace_ms=settings.shutdown_grace_ms,
        details=lambda run: {
            "listen": settings.listen_addr, "port": run.port, "psps": sorted(settings.psps),
            "wallet": settings.wallet.addr, "tls": bool(settings.tls_cert_file),
            "wallet_tls": bool(settings.wallet.tls_ca_file or settings.wallet.tls_cert_file)})
