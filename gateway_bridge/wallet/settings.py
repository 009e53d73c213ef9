"""How the bridge reaches the wallet: its address, the bridge's token (payments scope), each
call's deadline, and TLS. Read from BRIDGE_WALLET_*; the token may come from
BRIDGE_WALLET_TOKEN_FILE instead.

Each default is written once, on its field below; `load` reads it from `_DEFAULTS`. That
the TLS files exist (and come in pairs) is checked by the wiring with the listener's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from service_kit.settings import EnvReader, read_secret


@dataclass(frozen=True, slots=True)
class WalletSettings:
    # The bridge's bearer token: a secret, so no default and never in repr().
    token: str = field(repr=False)
    addr: str = "127.0.0.1:50051"
    # Each wallet call's deadline; an inbox worker holds a payment row lock at most this long.
    timeout_ms: int = 3000
    # TLS to the wallet: the CA that signed its certificate (empty: plaintext unless a client
    # certificate is set, then the system roots), and our client certificate for a wallet
    # that requires one (WALLET_TLS_CLIENT_CA_FILE, mutual TLS).
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""


# Every field's default; the token's "" only fills the required field and is never used.
_DEFAULTS = WalletSettings(token="")


def load(env: Mapping[str, str], r: EnvReader) -> WalletSettings:
    d = _DEFAULTS
    return WalletSettings(
        token=read_secret(env, r, "BRIDGE_WALLET_TOKEN", required=True),
        addr=r.text("BRIDGE_WALLET_ADDR", d.addr),
        timeout_ms=r.integer("BRIDGE_WALLET_TIMEOUT_MS", d.timeout_ms, low=50, high=60_000),
        tls_ca_file=env.get("BRIDGE_WALLET_TLS_CA_FILE", d.tls_ca_file),
        tls_cert_file=env.get("BRIDGE_WALLET_TLS_CERT_FILE", d.tls_cert_file),
        tls_key_file=env.get("BRIDGE_WALLET_TLS_KEY_FILE", d.tls_key_file),
    )
