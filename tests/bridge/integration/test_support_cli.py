"""Support commands (`walletctl`) over the real bridge, simulator and wallet: find a payment by
any reference, show it as the cashier API does, force a status sync whose answer the running
bridge applies; the deprecated `gateway-bridge` spellings of them; and a DATABASE_URL that
names a database or role the server does not have."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest

from gateway_bridge.server import Running as BridgeRunning
from tests.bridge.clis import gateway_bridge, walletctl
from tests.bridge.conftest import Cashier, bridge_env
from tests.helpers import Client
from wallet_core.server import Running as WalletRunning


async def test_find_payment_by_any_reference(
        bridge: BridgeRunning, cashier: Cashier, bridge_db: str, player: str) -> None:
    """The PSP's reference and the cashier's Idempotency-Key both find the payment; an
    unknown reference exits 1."""
    created = await cashier.deposit(player, 7_00)
    env = {"DATABASE_URL": bridge_db}
    for reference in (created["psp_reference"], created["id"]):
        found = await asyncio.to_thread(walletctl, env, "payment", "find", reference)
        assert found.returncode == 0, found.stderr
        assert [p["id"] for p in orjson.loads(found.stdout)] == [created["id"]]
    missing = await asyncio.to_thread(walletctl, env, "payment", "find", "pi_nothing_like_it")
    assert missing.returncode == 1


async def test_show_prints_what_the_cashier_api_answers(
        bridge: BridgeRunning, cashier: Cashier, bridge_db: str, player: str) -> None:
    """`payment show` prints the cashier API's view of the payment with its history (less
    the risk screening, which only the API shows); an unknown id exits 1."""
    for psp in ("stripe", "nowpayments"):  # a checkout URL; a crypto address and amount
        created = await cashier.deposit(player, 8_00, psp=psp)
        shown = await asyncio.to_thread(walletctl, {"DATABASE_URL": bridge_db},
                                        "payment", "show", created["id"])
        assert shown.returncode == 0, shown.stderr
        answered = await cashier.payment(created["id"])
        answered.pop("risk", None)
        assert orjson.loads(shown.stdout) == answered
    missing = await asyncio.to_thread(walletctl, {"DATABASE_URL": bridge_db},
                                      "payment", "show", "pay_nothing_like_it")
    assert (missing.returncode, missing.stderr) == (1, "no payment pay_nothing_like_it\n")


async def test_forced_status_sync_recovers_a_lost_webhook(
        bridge: BridgeRunning, cashier: Cashier, client: Client, server: WalletRunning,
        bridge_db: str, sim: str, bridge_port: int, player: str) -> None:
    """The PSP's webhook is lost; `payment sync` asks the PSP now, its answer goes through
    the inbox, the running bridge credits the deposit once, and the history says who and
    why."""
    await client.open(player)
    created = await cashier.deposit(player, 9_00)
    await cashier.knobs(drop_rate=1.0)
    await cashier.complete_deposit(created)
    await asyncio.sleep(0.3)
    assert (await cashier.payment(created["id"]))["state"] != "succeeded"
    env = bridge_env(database_url=bridge_db, wallet_port=server.port, sim_url=sim,
                     bridge_port=bridge_port)
    done = await asyncio.to_thread(walletctl, env, "payment", "sync", created["id"],
                                   "--reason", "player says paid", "--actor", "dave")
    assert done.returncode == 0, done.stdout + done.stderr
    await cashier.wait_state(created["id"], "succeeded")
    assert (await client.balance(player)).cash == 9_00
    history = (await cashier.payment(created["id"]))["history"]
    assert any(h["source"] == "support" and "dave" in h["note"] for h in history)
    for secret in (env["BRIDGE_STRIPE_API_KEY"], env["BRIDGE_STRIPE_WEBHOOK_SECRET"]):
        assert secret not in done.stdout + done.stderr


async def test_old_gateway_bridge_spellings_still_work_and_name_their_replacement(
        bridge: BridgeRunning, cashier: Cashier, server: WalletRunning, bridge_db: str,
        sim: str, bridge_port: int, player: str) -> None:
    """Each support command's old `gateway-bridge` spelling answers as its `walletctl`
    command does (same exit code, same stdout, same stderr) after one deprecation line on
    stderr naming that command."""
    created = await cashier.deposit(player, 6_00)
    env = {**bridge_env(database_url=bridge_db, wallet_port=server.port, sim_url=sim,
                        bridge_port=bridge_port),
           # `risk` without a key stops before calling the bridge: exit 2 on both.
           "BRIDGE_SUPPORT_API_KEY": "", "BRIDGE_SUPPORT_API_KEY_FILE": ""}
    # old command, its walletctl command, the arguments both take
    cases = [
        ("payment", "payment show", [created["id"]]),
        ("find-payment", "payment find", [created["id"]]),
        ("find-payment", "payment find", ["pi_nothing_like_it"]),
        ("sync-payment", "payment sync", ["pay_nothing_like_it", "--reason", "x"]),
        ("dead-letters", "dead-letters", ["list", "--after", str(2**62)]),
        ("risk", "risk", ["pending"]),
    ]
    for old_command, new_command, args in cases:
        old = await asyncio.to_thread(gateway_bridge, env, old_command, *args)
        new = await asyncio.to_thread(walletctl, env, *new_command.split(), *args)
        deprecation = (f"gateway-bridge {old_command} is deprecated and goes in the next "
                       f"release: use walletctl {new_command} (same arguments)\n")
        assert (old.returncode, old.stdout) == (new.returncode, new.stdout), old_command
        assert old.stderr == deprecation + new.stderr, old_command
        assert "Traceback" not in old.stderr + new.stderr


def _url_with(base_url: str, *, user: str | None = None, database: str | None = None,
              password: str) -> str:
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user or parts.username or 'postgres'}:{password}@{host}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}" if database
                                     else parts.path))


@pytest.mark.parametrize("args", [("dead-letters", "list"), ("payment", "show", "pay_x"),
                                  ("incidents", "list")])
async def test_walletctl_names_a_database_that_does_not_exist_and_exits_3(
        base_database_url: str, args: tuple[str, ...]) -> None:
    """A DATABASE_URL naming a database the real server does not have is a configuration
    error: exit 3 (not 1, "try again"), the database named and DATABASE_URL blamed, and the
    URL's password never printed."""
    # The test server trusts 127.0.0.1, so the password is carried but never checked.
    password = urlsplit(base_database_url).password or "not-printed-0xC0FFEE"
    url = _url_with(base_database_url, database="walletctl_no_such_database",
                    password=password)
    ran = await asyncio.to_thread(walletctl, {"DATABASE_URL": url}, *args)
    assert ran.returncode == 3, ran.stderr
    assert 'database "walletctl_no_such_database" does not exist' in ran.stderr
    assert "check the database name in DATABASE_URL" in ran.stderr
    assert password not in ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr


async def test_walletctl_names_a_role_that_does_not_exist_and_exits_3(
        base_database_url: str) -> None:
    """The same for a user the server does not know: exit 3, the user named, the user name
    or password in DATABASE_URL blamed, the password never printed."""
    password = "not-printed-0xBADF00D"
    url = _url_with(base_database_url, user="walletctl_no_such_role", password=password)
    ran = await asyncio.to_thread(walletctl, {"DATABASE_URL": url}, "dead-letters", "list")
    assert ran.returncode == 3, ran.stderr
    assert '"walletctl_no_such_role"' in ran.stderr  # "role … does not exist" or bad password
    assert "check the user name or password in DATABASE_URL" in ran.stderr
    assert password not in ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
