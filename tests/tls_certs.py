"""Throwaway PKI for TLS tests: a CA (trustme), a loopback server certificate, a client
certificate for mutual TLS, and a second, untrusted CA with its own client certificate.

Everything is written as PEM files, because the services take file paths in their settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import trustme

from wallet_core import config


@dataclass(frozen=True, slots=True)
class Pki:
    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    client_cert_file: Path
    client_key_file: Path
    # Signed by a CA the servers do not trust: must be refused.
    rogue_ca_file: Path
    rogue_client_cert_file: Path
    rogue_client_key_file: Path


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca, rogue = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("gateway-bridge.internal")
    rogue_client = rogue.issue_cert("gateway-bridge.internal")
    pki = Pki(*(folder / name for name in (
        "ca.pem", "server.pem", "server.key", "client.pem", "client.key",
        "rogue-ca.pem", "rogue-client.pem", "rogue-client.key")))
    ca.cert_pem.write_to_path(pki.ca_file)
    server.cert_chain_pems[0].write_to_path(pki.server_cert_file)
    server.private_key_pem.write_to_path(pki.server_key_file)
    client.cert_chain_pems[0].write_to_path(pki.client_cert_file)
    client.private_key_pem.write_to_path(pki.client_key_file)
    rogue.cert_pem.write_to_path(pki.rogue_ca_file)
    rogue_client.cert_chain_pems[0].write_to_path(pki.rogue_client_cert_file)
    rogue_client.private_key_pem.write_to_path(pki.rogue_client_key_file)
    return pki


def tls_settings(settings: config.Settings, pki: Pki, *, mutual: bool) -> config.Settings:
    """The session's wallet settings, serving TLS (and requiring client certificates)."""
    return replace(settings, listen_addr="127.0.0.1:0",
                   tls_cert_file=str(pki.server_cert_file),
                   tls_key_file=str(pki.server_key_file),
                   tls_client_ca_file=str(pki.ca_file) if mutual else "")


def channel_credentials(pki: Pki, *, ca: Path | None = None, cert: Path | None = None,
                        key: Path | None = None) -> grpc.ChannelCredentials:
    """Client TLS credentials trusting `ca` (default: the PKI's CA), with an optional
    client certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=(ca or pki.ca_file).read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None)
