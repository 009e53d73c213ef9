"""TLS on the bridge: its HTTPS listener (real HTTPS on loopback with a test-made
certificate) and its gRPC channel to a wallet that requires mutual TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from gateway_bridge import config as bridge_config
from gateway_bridge.server import listener_tls_context
from gateway_bridge.wallet.settings import WalletSettings
from tests.bridge.conftest import API_KEY, BridgeFactory, Cashier
from tests.helpers import Client
from tests.tls_certs import Pki, make_pki, tls_settings
from wallet_core import config
from wallet_core.server import Running as WalletRunning
from wallet_core.server import running as wallet_running


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("bridge-pki"))


@pytest.fixture(scope="module")
async def mtls_wallet(settings: config.Settings, pki: Pki) -> AsyncIterator[WalletRunning]:
    async with wallet_running(tls_settings(settings, pki, mutual=True)) as run:
        yield run


def _tls_listener_env(pki: Pki) -> dict[str, str]:
    return {"BRIDGE_TLS_CERT_FILE": str(pki.server_cert_file),
            "BRIDGE_TLS_KEY_FILE": str(pki.server_key_file)}


def _client_tls(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_file))


async def test_https_listener_serves_healthz_and_the_cashier(make_bridge: BridgeFactory,
                                                             pki: Pki, player: str) -> None:
    """With BRIDGE_TLS_CERT_FILE/KEY, /healthz and a cashier deposit work over real HTTPS
    for a client that trusts the CA, and the session negotiates TLS 1.2 or newer."""
    async with make_bridge(**_tls_listener_env(pki)) as run, aiohttp.ClientSession() as http:
        base = f"https://127.0.0.1:{run.port}"
        async with http.get(f"{base}/healthz", ssl=_client_tls(pki)) as r:
            assert r.status == 200
            assert await r.json() == {"status": "ok"}
        async with http.post(f"{base}/v1/deposits", ssl=_client_tls(pki), json={
                "player_id": player, "amount_minor": 1500, "currency": "USD", "psp": "stripe",
                "method": "card"}, headers={"Authorization": f"Bearer {API_KEY}",
                                            "Idempotency-Key": f"tls-{player}"}) as r:
            body = orjson.loads(await r.read())
            assert r.status == 201, body
            assert body["instructions"]["checkout_url"]
        _, writer = await asyncio.open_connection("127.0.0.1", run.port, ssl=_client_tls(pki))
        try:
            assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        finally:
            writer.close()


async def test_https_listener_refuses_plaintext_and_untrusted_clients(
        make_bridge: BridgeFactory, pki: Pki) -> None:
    """Plain HTTP to the TLS port gets no HTTP answer, and a client that does not trust the
    certificate fails verification."""
    async with make_bridge(**_tls_listener_env(pki)) as run, aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{run.port}/healthz") as r:
                await r.read()
        untrusted = ssl.create_default_context(cafile=str(pki.rogue_ca_file))
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with http.get(f"https://127.0.0.1:{run.port}/healthz", ssl=untrusted) as r:
                await r.read()


def test_listener_tls_context_floor_is_tls_1_2(pki: Pki) -> None:
    """The listener context refuses anything older than TLS 1.2; no files, no TLS."""
    settings = bridge_config.Settings(database_url="", wallet=WalletSettings(token=""),
                                      tls_cert_file=str(pki.server_cert_file),
                                      tls_key_file=str(pki.server_key_file))
    context = listener_tls_context(settings)
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert listener_tls_context(
        bridge_config.Settings(database_url="", wallet=WalletSettings(token=""))) is None


async def test_bridge_reaches_an_mtls_wallet_with_its_client_certificate(
        make_bridge: BridgeFactory, mtls_wallet: WalletRunning, pki: Pki, cashier: Cashier,
        client: Client, player: str) -> None:
    """With BRIDGE_WALLET_TLS_CA/CERT/KEY the bridge opens the wallet and credits a deposit
    (webhook -> inbox -> Deposit) through a wallet that requires client certificates."""
    async with make_bridge(wallet_port=mtls_wallet.port,
                           BRIDGE_WALLET_TLS_CA_FILE=str(pki.ca_file),
                           BRIDGE_WALLET_TLS_CERT_FILE=str(pki.client_cert_file),
                           BRIDGE_WALLET_TLS_KEY_FILE=str(pki.client_key_file)):
        payment = await cashier.deposit(player, 2500, key=f"mtls-{player}")
        await cashier.complete_deposit(payment)
        await cashier.wait_state(payment["id"], "succeeded")
    assert (await client.balance(player)).cash == 2500


async def test_bridge_without_a_client_certificate_cannot_reach_an_mtls_wallet(
        make_bridge: BridgeFactory, mtls_wallet: WalletRunning, pki: Pki, cashier: Cashier,
        player: str) -> None:
    """Trusting the wallet's CA is not enough: with no client certificate the handshake is
    refused, so the deposit is answered 503 UNAVAILABLE and nothing is credited."""
    async with make_bridge(wallet_port=mtls_wallet.port,
                           BRIDGE_WALLET_TLS_CA_FILE=str(pki.ca_file),
                           BRIDGE_WALLET_TLS_KEY_FILE="", BRIDGE_WALLET_TLS_CERT_FILE=""):
        status, body = await cashier.request("POST", "/v1/deposits", body={
            "player_id": player, "amount_minor": 100, "currency": "USD", "psp": "stripe",
            "method": "card"}, headers={"Idempotency-Key": f"nocert-{player}"})
    assert status == 503 and body["error"]["code"] == "UNAVAILABLE", (status, body)


def test_bridge_tls_settings_are_validated(pki: Pki) -> None:
    """Half a certificate pair or a missing file is refused at start-up, by name."""
    env = {"DATABASE_URL": "postgresql://127.0.0.1/unused", "BRIDGE_WALLET_TOKEN": "t" * 20,
           "BRIDGE_API_KEYS": '{"c": "0123456789abcdef"}', "BRIDGE_STRIPE_API_KEY": "sk_x",
           "BRIDGE_STRIPE_WEBHOOK_SECRET": "whsec_x", "BRIDGE_STRIPE_BASE_URL": "http://x",
           "BRIDGE_TLS_CERT_FILE": str(pki.server_cert_file),
           "BRIDGE_WALLET_TLS_KEY_FILE": "/nonexistent/client.key"}
    with pytest.raises(bridge_config.SettingsError) as caught:
        bridge_config.load(env)
    problems = caught.value.problems
    assert "BRIDGE_TLS_CERT_FILE/BRIDGE_TLS_KEY_FILE: set both or neither" in problems
    assert ("BRIDGE_WALLET_TLS_CERT_FILE/BRIDGE_WALLET_TLS_KEY_FILE: set both or neither"
            in problems)
    assert "BRIDGE_WALLET_TLS_KEY_FILE: /nonexistent/client.key does not exist" in problems
