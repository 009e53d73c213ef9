"""TLS and mutual TLS on the wallet's gRPC listener, end to end on loopback, with
certificates made by the test (tests/tls_certs.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from wallet.v1 import wallet_service_pb2 as pb

from tests.helpers import Client, key
from tests.tls_certs import Pki, channel_credentials, make_pki, tls_settings
from wallet_core import config
from wallet_core.server import Running, running

# Handshake refusals surface as UNAVAILABLE; a short deadline keeps refused cases quick.
REFUSED_DEADLINE_S = 3


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
async def tls_wallet(settings: config.Settings, pki: Pki) -> AsyncIterator[Running]:
    async with running(tls_settings(settings, pki, mutual=False)) as run:
        yield run


@pytest.fixture(scope="module")
async def mtls_wallet(settings: config.Settings, pki: Pki) -> AsyncIterator[Running]:
    async with running(tls_settings(settings, pki, mutual=True)) as run:
        yield run


async def _open_wallet(channel: grpc.aio.Channel, player: str) -> pb.OpenWalletResponse:
    client = Client(channel)
    return await client.call("OpenWallet", pb.OpenWalletRequest(
        player_id=player, currency="USD", idempotency_key=key("open")), "payments",
        deadline_s=REFUSED_DEADLINE_S)


async def _refused(channel: grpc.aio.Channel, player: str) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _open_wallet(channel, player)
    return caught.value.code()


async def test_plaintext_client_is_refused_by_a_tls_wallet(tls_wallet: Running,
                                                            player: str) -> None:
    """A client speaking plaintext to the TLS listener gets no answer (UNAVAILABLE)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tls_wallet.port}") as channel:
        assert await _refused(channel, player) == grpc.StatusCode.UNAVAILABLE


async def test_tls_client_trusting_the_ca_is_served(tls_wallet: Running, pki: Pki,
                                                    player: str) -> None:
    """A TLS client that trusts the test CA completes the handshake and is served."""
    target = f"127.0.0.1:{tls_wallet.port}"
    async with grpc.aio.secure_channel(target, channel_credentials(pki)) as channel:
        reply = await _open_wallet(channel, player)
    assert reply.created


async def test_tls_client_trusting_another_ca_is_refused(tls_wallet: Running, pki: Pki,
                                                         player: str) -> None:
    """The client really verifies the server: a certificate from an untrusted CA fails."""
    creds = channel_credentials(pki, ca=pki.rogue_ca_file)
    async with grpc.aio.secure_channel(f"127.0.0.1:{tls_wallet.port}", creds) as channel:
        assert await _refused(channel, player) == grpc.StatusCode.UNAVAILABLE


async def test_mtls_refuses_a_client_without_a_certificate(mtls_wallet: Running, pki: Pki,
                                                           player: str) -> None:
    """With WALLET_TLS_CLIENT_CA_FILE, a TLS client with no certificate is refused,
    even with a valid bearer token."""
    target = f"127.0.0.1:{mtls_wallet.port}"
    async with grpc.aio.secure_channel(target, channel_credentials(pki)) as channel:
        assert await _refused(channel, player) == grpc.StatusCode.UNAVAILABLE


async def test_mtls_refuses_a_certificate_from_another_ca(mtls_wallet: Running, pki: Pki,
                                                          player: str) -> None:
    """A client certificate not signed by the configured client CA is refused."""
    creds = channel_credentials(pki, cert=pki.rogue_client_cert_file,
                                key=pki.rogue_client_key_file)
    async with grpc.aio.secure_channel(f"127.0.0.1:{mtls_wallet.port}", creds) as channel:
        assert await _refused(channel, player) == grpc.StatusCode.UNAVAILABLE


async def test_mtls_serves_a_client_with_a_certificate(mtls_wallet: Running, pki: Pki,
                                                       player: str) -> None:
    """A client presenting a certificate from the client CA is served."""
    creds = channel_credentials(pki, cert=pki.client_cert_file, key=pki.client_key_file)
    async with grpc.aio.secure_channel(f"127.0.0.1:{mtls_wallet.port}", creds) as channel:
        reply = await _open_wallet(channel, player)
    assert reply.created


@pytest.mark.parametrize(("env", "problem"), [
    ({"WALLET_TLS_CLIENT_CA_FILE": "{ca}"}, "WALLET_TLS_CLIENT_CA_FILE: client certificates "
                                           "need TLS"),
    ({"WALLET_TLS_CERT_FILE": "{cert}", "WALLET_TLS_KEY_FILE": "{key}",
      "WALLET_TLS_CLIENT_CA_FILE": "/nonexistent/ca.pem"},
     "WALLET_TLS_CLIENT_CA_FILE: /nonexistent/ca.pem does not exist"),
])
def test_tls_settings_are_validated(pki: Pki, env: dict[str, str],
                                    problem: str) -> None:
    """mTLS without TLS, or a missing client CA file, is refused at start-up by name."""
    paths = {"ca": str(pki.ca_file), "cert": str(pki.server_cert_file),
             "key": str(pki.server_key_file)}
    values = {name: value.format(**paths) for name, value in env.items()}
    with pytest.raises(config.SettingsError) as caught:
        config.load({"DATABASE_URL": "postgresql://127.0.0.1/unused", "WALLET_CALLERS": _CALLERS, **values})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


_CALLERS = '{"svc": {"token": "0123456789abcdef0123", "scopes": ["read"]}}'

