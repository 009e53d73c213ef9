"""The wallet as a process: config validation at start-up and graceful SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import grpc
import pytest

from loadtests.ports import lease_port
from tests.helpers import CALLERS_JSON, TOKENS, Client, key, until_blocked_by
from wallet_core import config
from wallet_core.config import SettingsError

WALLET_CORE = [sys.executable, "-m", "wallet_core"]


def test_every_bad_setting_is_named() -> None:
    """Config validation lists each bad field in one go, and never echoes a token."""
    with pytest.raises(SettingsError) as caught:
        config.load({"DATABASE_URL": "mysql://x", "WALLET_DB_POOL_SIZE_MAX": "lots",
                     "WALLET_REQUEST_TIMEOUT_MS": "0", "WALLET_MIGRATE_ON_START": "maybe",
                     "WALLET_CALLERS": '{"svc": {"token": "short", "scopes": ["game"]}}'})
    text = str(caught.value)
    for field in ("DATABASE_URL", "WALLET_DB_POOL_SIZE_MAX", "WALLET_REQUEST_TIMEOUT_MS",
                  "WALLET_MIGRATE_ON_START", "WALLET_CALLERS[svc].token"):
        assert field in text
    assert "short" not in text


def test_settings_repr_hides_secrets(settings: config.Settings) -> None:
    """Tokens and URLs stay out of repr(), so logging the settings leaks nothing."""
    shown = repr(settings)
    assert all(token not in shown for token in TOKENS.values())
    assert "postgresql://" not in shown


def test_callers_can_come_from_a_file_never_echoed(tmp_path: Path) -> None:
    """WALLET_CALLERS_FILE is read instead of WALLET_CALLERS; an unreadable or empty file
    is named in the problem, and no token ever is."""
    callers = tmp_path / "callers.json"
    callers.write_text(CALLERS_JSON + "\n")
    env = {"DATABASE_URL": "postgresql://x/y", "WALLET_CALLERS": "",
           "WALLET_CALLERS_FILE": str(callers)}
    assert len(config.load(env).callers_by_token_sha256) == len(TOKENS)
    missing = str(tmp_path / "missing.json")
    with pytest.raises(SettingsError) as caught:
        config.load({**env, "WALLET_CALLERS_FILE": missing})
    assert caught.value.problems == [
        f"WALLET_CALLERS_FILE: cannot read {missing}: No such file or directory"]
    callers.write_text("")
    with pytest.raises(SettingsError) as caught:
        config.load(env)
    assert caught.value.problems == ["WALLET_CALLERS (or WALLET_CALLERS_FILE): required, not set"]
    assert all(token not in str(caught.value) for token in TOKENS.values())


def test_serve_with_bad_config_exits_2_with_field_messages() -> None:
    """`wallet-core serve` refuses to start on bad config, naming each field."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.pop("DATABASE_URL", None)
    env["WALLET_CONCURRENT_RPCS_MAX"] = "-1"
    proc = subprocess.run([*WALLET_CORE, "serve"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "DATABASE_URL: required" in proc.stderr
    assert "WALLET_CONCURRENT_RPCS_MAX" in proc.stderr and "WALLET_CALLERS" in proc.stderr



async def test_sigterm_finishes_the_call_in_flight_then_exits(
        database_url: str, redis_url: str, db: asyncpg.Connection, player: str,
        ledger_clean: None) -> None:
    """SIGTERM during a call: the call completes within the grace period, exit code 0."""
    port = lease_port()
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "WALLET_CALLERS": CALLERS_JSON, "WALLET_LISTEN_ADDR": f"127.0.0.1:{port}",
           "WALLET_SHUTDOWN_GRACE_MS": "5000", "WALLET_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([*WALLET_CORE, "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=20)
            client = Client(channel)
            await client.funded(player, 10_00)
            locker = await asyncpg.connect(database_url)
            try:
                tx = locker.transaction()
                await tx.start()
                await locker.execute("SELECT 1 FROM wallet.wallets WHERE player_id = $1 "
                                     "FOR UPDATE", player)
                in_flight = asyncio.create_task(client.bet(player, 2_00, idem=key()))
                # SIGTERM only once the Bet is in the server, waiting for the wallet row:
                # sent earlier, the Bet would be refused as a new call during shutdown.
                await until_blocked_by(db, locker.get_server_pid())
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                assert proc.poll() is None, "exited before finishing the call in flight"
                await tx.rollback()  # release the lock: the call can now finish
            finally:
                await locker.close()
            response = await asyncio.wait_for(in_flight, timeout=10)
            assert response.result.balances.cash == 8_00
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

