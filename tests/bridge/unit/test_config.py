"""Bridge settings: every problem reported at once, secrets never in repr, files for secrets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway_bridge import config
from gateway_bridge.fx.settings import FxSettings
from gateway_bridge.incidents.rules import IncidentPolicy
from gateway_bridge.payments.settings import PaymentSettings
from gateway_bridge.psp.base import PspConfig
from gateway_bridge.risk.rules import RiskPolicy
from gateway_bridge.wallet.settings import WalletSettings
from tests.bridge.conftest import PSP_ENV

BASE = {"DATABASE_URL": "postgresql://x@127.0.0.1/db", "BRIDGE_WALLET_TOKEN": "t" * 24,
        "BRIDGE_API_KEYS": '{"cashier": "0123456789abcdef0123"}',
        "BRIDGE_STRIPE_BASE_URL": "http://127.0.0.1:1/stripe",
        "BRIDGE_ADYEN_BASE_URL": "http://127.0.0.1:1/adyen",
        "BRIDGE_NOWPAYMENTS_BASE_URL": "http://127.0.0.1:1/nowpayments", **PSP_ENV}


def test_valid_settings_load_and_hide_secrets() -> None:
    """All three PSPs enabled; no secret value appears in repr()."""
    s = config.load(BASE)
    assert sorted(s.psps) == ["adyen", "nowpayments", "stripe"]
    text = repr(s)
    for secret in (BASE["BRIDGE_WALLET_TOKEN"], "0123456789abcdef0123", *PSP_ENV.values()):
        if secret not in ("TestMerchant",):
            assert secret not in text


def test_every_problem_is_reported_at_once() -> None:
    """Missing token, bad JSON keys, half-configured PSP, non-hex Adyen key, bad numbers."""
    env = {**BASE, "BRIDGE_WALLET_TOKEN": "", "BRIDGE_API_KEYS": "{not json",
           "BRIDGE_STRIPE_WEBHOOK_SECRET": "", "BRIDGE_ADYEN_HMAC_KEY": "zz-not-hex",
           "BRIDGE_INBOX_WORKERS": "0", "BRIDGE_SYNC_SCHEDULE_MS": "5,abc"}
    with pytest.raises(config.SettingsError) as err:
        config.load(env)
    problems = "\n".join(err.value.problems)
    for name in ("BRIDGE_WALLET_TOKEN", "BRIDGE_API_KEYS", "BRIDGE_STRIPE_API_KEY",
                 "BRIDGE_ADYEN_HMAC_KEY", "BRIDGE_INBOX_WORKERS", "BRIDGE_SYNC_SCHEDULE_MS"):
        assert name in problems, name
    assert "zz-not-hex" not in problems


def test_no_psp_enabled_is_an_error() -> None:
    """A bridge with no PSP configured refuses to start."""
    env = {k: v for k, v in BASE.items() if not k.startswith("BRIDGE_") or
           k in ("BRIDGE_WALLET_TOKEN", "BRIDGE_API_KEYS")}
    with pytest.raises(config.SettingsError, match="no PSP enabled"):
        config.load(env)


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    """<NAME>_FILE is read (and stripped) instead of the variable."""
    token_file = tmp_path / "token"
    token_file.write_text("file-token-0123456789\n")
    env = {**BASE, "BRIDGE_WALLET_TOKEN": "", "BRIDGE_WALLET_TOKEN_FILE": str(token_file)}
    assert config.load(env).wallet.token == "file-token-0123456789"
    with pytest.raises(config.SettingsError, match="BRIDGE_WALLET_TOKEN_FILE"):
        config.load({**env, "BRIDGE_WALLET_TOKEN_FILE": str(tmp_path / "missing")})


def test_an_empty_secret_file_is_a_missing_secret(tmp_path: Path) -> None:
    """A required secret whose _FILE is empty is reported as not set, as the wallet does."""
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(config.SettingsError) as err:
        config.load({**BASE, "BRIDGE_WALLET_TOKEN_FILE": str(empty)})
    assert "BRIDGE_WALLET_TOKEN (or BRIDGE_WALLET_TOKEN_FILE): required, not set" in \
        err.value.problems


def test_unset_variables_take_each_dataclass_default() -> None:
    """Each default is written once, on its field: with nothing optional set, every section
    equals its dataclass's defaults (so a loader cannot drift from its field)."""
    env = {k: v for k, v in BASE.items() if not k.startswith(("BRIDGE_ADYEN", "BRIDGE_NOW"))}
    s = config.load(env)
    assert s.payments == PaymentSettings(pending_limit_ms={"stripe": 300_000})
    assert (s.fx, s.risk, s.incidents) == (FxSettings(), RiskPolicy(), IncidentPolicy())
    assert s.wallet == WalletSettings(token=BASE["BRIDGE_WALLET_TOKEN"])
    assert s.psps == {"stripe": PspConfig(
        name="stripe", base_url=env["BRIDGE_STRIPE_BASE_URL"],
        api_key=env["BRIDGE_STRIPE_API_KEY"], webhook_secret=env["BRIDGE_STRIPE_WEBHOOK_SECRET"],
        callback_url="http://127.0.0.1:8080/webhooks/stripe")}
    defaults = config.Settings(database_url=s.database_url, wallet=s.wallet)
    assert replace(s, clients_by_key_sha256={}, psps={}, payments=defaults.payments) == defaults
