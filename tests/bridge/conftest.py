"""Bridge fixtures: the PSP simulator (session), a bridge per test on a leased port, and a
cashier client with shortcuts. The wallet is the session's real gRPC server.

The bridge is started per test so no test's inbox workers outlive it: tests that keep the
wallet out of reach must not have another bridge apply their events behind their back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from gateway_bridge import config as bridge_config
from gateway_bridge.server import Running as BridgeRunning
from gateway_bridge.server import migrate_database
from gateway_bridge.server import running as bridge_running
from gateway_bridge.wallet.client import WalletClient
from loadtests.ports import lease_port
from psp_simulator import config as sim_config
from psp_simulator.app import running as sim_running
from tests.helpers import TOKENS
from wallet_core.server import Running as WalletRunning

API_KEY = "test-cashier-key-0123456789"
OTHER_API_KEY = "test-other-cashier-key-0123456789"
PSP_ENV = {
    "BRIDGE_STRIPE_API_KEY": "sk_test_bridge_tests_0123",
    "BRIDGE_STRIPE_WEBHOOK_SECRET": "whsec_bridge_tests_secret",
    "BRIDGE_ADYEN_API_KEY": "AQE_bridge_tests_0123",
    "BRIDGE_ADYEN_HMAC_KEY": "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056",
    "BRIDGE_ADYEN_MERCHANT_ACCOUNT": "TestMerchant",
    "BRIDGE_NOWPAYMENTS_API_KEY": "np_bridge_tests_0123",
    "BRIDGE_NOWPAYMENTS_IPN_SECRET": "np_ipn_bridge_tests_secret",
    # The KYC provider's tokens: the simulator always has them; a bridge uses them only
    # when a test sets BRIDGE_KYC_ONFIDO_BASE_URL (tests/bridge/integration/test_kyc.py).
    "BRIDGE_KYC_ONFIDO_API_TOKEN": "api_token_bridge_tests_0123",
    "BRIDGE_KYC_ONFIDO_WEBHOOK_TOKEN": "onfido_webhook_bridge_tests_secret",
}


@pytest.fixture(scope="session")
def bridge_port() -> int:
    """The session's bridge port, leased (loadtests/ports.py): the simulator must know the
    webhook target before any bridge starts, and each test's bridge binds it again."""
    return lease_port()


@pytest.fixture(scope="session")
async def sim(bridge_port: int) -> AsyncIterator[str]:
    settings = sim_config.load({**PSP_ENV, "SIM_LISTEN_ADDR": "127.0.0.1:0",
                                "SIM_WEBHOOK_BASE_URL": f"http://127.0.0.1:{bridge_port}"})
    async with sim_running(settings) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
async def bridge_db(database_url: str) -> str:
    await migrate_database(database_url)
    return database_url


def bridge_env(*, database_url: str, wallet_port: int, sim_url: str, bridge_port: int,
               **overrides: str) -> dict[str, str]:
    env = {
        **PSP_ENV,
        "DATABASE_URL": database_url,
        "BRIDGE_LISTEN_ADDR": f"127.0.0.1:{bridge_port}",
        "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{bridge_port}",
        "BRIDGE_WALLET_ADDR": f"127.0.0.1:{wallet_port}",
        "BRIDGE_WALLET_TOKEN": TOKENS["payments"],
        "BRIDGE_API_KEYS": orjson.dumps({"cashier": API_KEY, "other": OTHER_API_KEY}).decode(),
        "BRIDGE_STRIPE_BASE_URL": f"{sim_url}/stripe",
        "BRIDGE_ADYEN_BASE_URL": f"{sim_url}/adyen",
        "BRIDGE_NOWPAYMENTS_BASE_URL": f"{sim_url}/nowpayments",
        "BRIDGE_WALLET_TIMEOUT_MS": "2000",
        "BRIDGE_INBOX_POLL_MS": "50",
        "BRIDGE_INBOX_BACKOFF_MS": "20",
        "BRIDGE_INBOX_BACKOFF_MAX_MS": "200",
        "BRIDGE_INBOX_ATTEMPTS_MAX": "40",
        "BRIDGE_SYNC_INTERVAL_MS": "100",
        "BRIDGE_SYNC_SCHEDULE_MS": "60000,60000,60000",
        "BRIDGE_PSP_TIMEOUT_MS": "2000",
        "BRIDGE_PSP_RETRIES_MAX": "1",
        "BRIDGE_PSP_RETRY_BACKOFF_MS": "10",
        "BRIDGE_PSP_BREAKER_FAILURES_MAX": "3",
        "BRIDGE_PSP_BREAKER_COOLDOWN_MS": "500",
        "BRIDGE_SHUTDOWN_GRACE_MS": "1000",
        # The detector (and the probes it needs) would write incidents into the shared
        # database and call the simulator in every test; tests/bridge/integration/test_incidents.py
        # runs it in a database of its own.
        "BRIDGE_INCIDENTS_ENABLED": "false",
    }
    env.update(overrides)
    return env


BridgeFactory = Callable[..., AbstractAsyncContextManager[BridgeRunning]]


@asynccontextmanager
async def wallet_away(service: Any, *, timeout_ms: int) -> AsyncIterator[None]:
    """`service`'s wallet (its `_wallet`: the KYC service, the inbox) unreachable inside the
    block, a port nobody listens on; the rest of the bridge keeps its wallet."""
    real = service._wallet
    unreachable = WalletClient(addr=f"127.0.0.1:{lease_port()}", token=TOKENS["payments"],
                               timeout_ms=timeout_ms)
    service._wallet = unreachable
    try:
        yield
    finally:
        service._wallet = real
        await unreachable.close()


@pytest.fixture
def make_bridge(bridge_db: str, server: WalletRunning, sim: str,
                bridge_port: int) -> BridgeFactory:
    """make_bridge(**env overrides) -> async context manager running a bridge."""
    def make(*, wallet_port: int | None = None, workers: bool = True,
             **overrides: str) -> AbstractAsyncContextManager[BridgeRunning]:
        env = bridge_env(database_url=bridge_db,
                         wallet_port=server.port if wallet_port is None else wallet_port,
                         sim_url=sim, bridge_port=bridge_port, **overrides)
        return bridge_running(bridge_config.load(env), migrate_first=False, workers=workers)
    return make


@pytest.fixture
async def bridge(make_bridge: BridgeFactory) -> AsyncIterator[BridgeRunning]:
    async with make_bridge() as run:
        yield run


class Cashier:
    """The cashier REST API and the simulator's control API, for one test."""

    def __init__(self, http: aiohttp.ClientSession, bridge_url: str, sim_url: str) -> None:
        self.http = http
        self.url = bridge_url
        self.sim_url = sim_url
        self.auth = {"Authorization": f"Bearer {API_KEY}"}

    async def request(self, method: str, path: str, *, body: Any = None,
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        async with self.http.request(method, self.url + path, json=body,
                                     headers={**self.auth, **(headers or {})}) as r:
            return r.status, await r.json(loads=orjson.loads, content_type=None)

    async def deposit(self, player: str, amount_minor: int, *, psp: str = "stripe",
                      currency: str = "USD", key: str | None = None,
                      **extra: Any) -> dict[str, Any]:
        method = "crypto" if psp == "nowpayments" else "card"
        body = {"player_id": player, "amount_minor": amount_minor, "currency": currency,
                "psp": psp, "method": method, **extra}
        if psp == "nowpayments":
            body.setdefault("pay_currency", "btc")
        status, data = await self.request("POST", "/v1/deposits", body=body, headers={
            "Idempotency-Key": key or f"dep-{player}-{amount_minor}-{psp}"})
        assert status in (200, 201), (status, data)
        return data

    async def withdraw(self, player: str, amount_minor: int, *, psp: str = "stripe",
                       key: str | None = None, expect: tuple[int, ...] = (200, 202),
                       ) -> dict[str, Any]:
        body = {"player_id": player, "amount_minor": amount_minor, "currency": "USD",
                "psp": psp, "method": "bank_transfer", "destination": "acct_test_123"}
        status, data = await self.request("POST", "/v1/withdrawals", body=body, headers={
            "Idempotency-Key": key or f"wd-{player}-{amount_minor}-{psp}"})
        assert status in expect, (status, data)
        return data

    async def payment(self, payment_id: str) -> dict[str, Any]:
        status, data = await self.request("GET", f"/v1/payments/{payment_id}")
        assert status == 200, (status, data)
        return data

    async def wait_state(self, payment_id: str, state: str, *,
                         timeout_s: float = 10.0) -> dict[str, Any]:
        p: dict[str, Any] = {}
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    p = await self.payment(payment_id)
                    if p["state"] == state:
                        return p
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"payment never reached {state}: {p}") from None

    async def sim(self, path: str, body: Any = None) -> Any:
        async with self.http.post(self.sim_url + path, json=body or {}) as r:
            data = await r.json(loads=orjson.loads, content_type=None)
            assert r.status < 400, (path, r.status, data)
            return data

    async def sim_get(self, path: str) -> Any:
        async with self.http.get(self.sim_url + path) as r:
            data = await r.json(loads=orjson.loads, content_type=None)
            assert r.status < 400, (path, r.status, data)
            return data

    async def knobs(self, **values: Any) -> None:
        await self.sim("/_sim/knobs", values)

    async def complete_deposit(self, payment: dict[str, Any], outcome: str = "succeeded",
                               **extra: Any) -> Any:
        return await self.sim(f"/_sim/deposits/{payment['psp']}/{payment['psp_reference']}"
                              "/complete", {"outcome": outcome, **extra})

    async def complete_payout(self, payment: dict[str, Any], outcome: str = "paid") -> Any:
        return await self.sim(f"/_sim/payouts/{payment['psp']}/{payment['psp_reference']}"
                              "/complete", {"outcome": outcome})

    async def chargeback(self, payment: dict[str, Any], **extra: Any) -> Any:
        return await self.sim(f"/_sim/deposits/{payment['psp']}/{payment['psp_reference']}"
                              "/chargeback", extra)

    async def flush(self) -> None:
        await self.sim("/_sim/flush")


DEFAULT_KNOBS: dict[str, Any] = {
    "latency_ms": 0, "error_rate": 0, "down": False, "decline_rate": 0, "duplicate_count": 0,
    "reorder": False, "delay_ms": 0, "drop_rate": 0, "auto_complete_ms": 0, "poll_status": None,
    "auto_outcome": "success", "down_psps": [], "decline_rate_by_psp": {},
    "approval_by_psp_method": {}, "soft_decline_share_by_psp": {}, "decline_code_by_psp": {},
    "latency_ms_by_psp": {}, "refund_fail_psps": [],
    "work_ms_by_psp": {},
}


@pytest.fixture
async def cashier(sim: str, bridge_port: int) -> AsyncIterator[Cashier]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        c = Cashier(http, f"http://127.0.0.1:{bridge_port}", sim)
        await c.knobs(**DEFAULT_KNOBS)
        yield c
        await c.knobs(**DEFAULT_KNOBS)


@pytest.fixture
async def bridge_conn(bridge_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(bridge_db)
    yield conn
    await conn.close()
