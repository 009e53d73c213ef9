"""What kind of test an item is, from where it lives, and the guard that keeps unit tests pure.

    tests/wallet/unit, tests/bridge/unit   pure logic: no database, Redis, network or process
    tests/wallet/integration               the real wallet over gRPC on real Postgres and Redis
    tests/bridge/integration               the real bridge, simulator and wallet over HTTP/gRPC
    tests/faults                           crash and outage scenarios with real processes
    tests/project                          rules, deploy files and security checks

Each test gets the marker of its folder (`unit`, `integration`, `faults`, `project`), so
`pytest -m unit` runs every pure test in seconds with no servers at all. A module under
tests/project that only reads files may say `pytestmark = pytest.mark.unit` to join them.

A unit test that reaches for the outside world fails at once with a message naming what it
did, instead of passing here and hanging on a machine with no servers: it may not ask for a
fixture that needs a server, open a socket connection or listener, or start a process.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest

TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = {"unit": "unit", "integration": "integration", "faults": "faults",
                  "project": "project"}
MARKERS = {
    "unit": "pure logic: no database, Redis, network or subprocess (runs in seconds)",
    "integration": "real Postgres, Redis and servers on loopback",
    "faults": "fault scenarios: real processes killed, servers stopped mid-load",
    "project": "project rules, deploy files and security checks",
    "slow": "spawns processes or runs long property tests",
}
# Fixtures (tests/conftest.py, tests/bridge/conftest.py, tests/faults/conftest.py) that stand
# up or reach a server. A unit test asking for one is misfiled.
SERVER_FIXTURES = frozenset({
    "base_database_url", "database_url", "redis_url", "settings", "custom_settings", "server",
    "client", "redis_client", "db", "ledger_clean", "bridge_db", "sim", "bridge",
    "make_bridge", "cashier", "bridge_conn", "faults_database_url", "faults_redis_url",
})


def marker_for(path: Path) -> str | None:
    """The folder marker of a test file, or None for a file outside the layout."""
    try:
        parts = path.resolve().relative_to(TESTS).parts[:-1]
    except ValueError:
        return None
    for part in reversed(parts):  # the innermost folder wins: tests/bridge/unit -> unit
        if part in FOLDER_MARKERS:
            return FOLDER_MARKERS[part]
    return None


def _refuse(what: str) -> Any:
    def refused(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise AssertionError(f"a unit test may not {what}: move it to an integration folder "
                             "(tests/layers.py)")
    return refused


def refuse_server_fixtures(item: pytest.Item) -> None:
    wanted = SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if wanted:
        raise AssertionError(f"a unit test may not use the server fixtures {sorted(wanted)}: "
                             "move it to an integration folder (tests/layers.py)")


def refuse_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any network socket or process a unit test opens fail, naming what it did."""
    # Unix sockets stay allowed: the event loop's self-pipe uses a socketpair.
    real_connect = socket.socket.connect
    real_bind = socket.socket.bind

    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            _refuse(f"connect to {address!r}")()
        return real_connect(sock, address)

    def bind(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            _refuse(f"listen on {address!r}")()
        return real_bind(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse("open a socket connection"))
    monkeypatch.setattr(socket.socket, "bind", bind)
    monkeypatch.setattr(subprocess, "Popen", _refuse("start a process"))
