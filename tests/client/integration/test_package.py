"""The wallet-client wheel on its own: built from clients/python, installed into an empty
virtualenv with nothing but its declared dependencies, and the README's game-service example
run from it against a real wallet."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

import wallet_client as wc
from tests.helpers import TOKENS, key
from wallet_core.server import Running

ROOT = Path(__file__).resolve().parents[3]
PROCESS_TIMEOUT_S = 180
# Building the wheel and its venv (in the first test's set-up) takes about 10 s here, but
# pip may wait on a slow package index: the whole of it is bounded by PROCESS_TIMEOUT_S
# per step, not by the suite's 120 s per test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(4 * PROCESS_TIMEOUT_S)]


async def _run(*argv: str | Path, env: dict[str, str] | None = None) -> str:
    """A subprocess, awaited without blocking the loop the wallet under test serves from;
    run outside the repository, so nothing of it is importable by accident."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=env, cwd=tempfile.gettempdir())
    out, _ = await asyncio.wait_for(proc.communicate(), PROCESS_TIMEOUT_S)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{argv[:3]} exited {proc.returncode}:\n{text[-3000:]}"
    return text


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- example: game-service -->\n```python\n(.*?)```", text, re.S)
    assert found, "the README lost its game-service example"
    return found.group(1)


def test_the_readme_example_is_twenty_lines() -> None:
    lines = [line for line in readme_example().splitlines() if line.strip()]
    assert len(lines) <= 20, len(lines)


@pytest.fixture(scope="module")
async def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, its dependencies (pinned by constraints.txt) and a venv with only them."""
    work = tmp_path_factory.mktemp("wallet-client")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    await _run(*pip, "wheel", "--no-deps", "-w", work / "dist", ROOT / "clients" / "python")
    (wheel,) = (work / "dist").glob("wallet_client-*.whl")
    assert wheel.name.startswith(f"wallet_client-{wc.__version__}-")
    await _run(*pip, "download", "-d", work / "deps", "-c", ROOT / "constraints.txt", wheel)
    await _run(sys.executable, "-m", "venv", work / "venv")
    python = work / "venv" / "bin" / "python"
    await _run(python, "-m", "pip", "install", "-q", "--no-index", "--find-links",
               work / "deps", wheel)
    return python


async def test_the_wheel_needs_nothing_of_the_wallet(client_venv: Path) -> None:
    out = await _run(client_venv, "-c", (
        "import importlib.metadata as m, importlib.util as u, wallet_client\n"
        "print(sorted(r.split(';')[0].split('>')[0].split('=')[0].split('<')[0].strip() "
        "for r in m.requires('wallet-client')))\n"
        "print([n for n in ('wallet_core', 'gateway_bridge', 'asyncpg', 'redis', 'orjson') "
        "if u.find_spec(n)])\n"
        "print(wallet_client.__version__)"))
    requires, present, version = out.strip().splitlines()
    assert requires == "['googleapis-common-protos', 'grpcio', 'protobuf']"
    assert present == "[]", f"the client's venv has the wallet's packages: {present}"
    assert version == wc.__version__


async def test_the_readme_example_plays_a_round_once(client_venv: Path, server: Running,
                                                     tmp_path: Path) -> None:
    async with wc.AsyncWalletClient(f"127.0.0.1:{server.port}",
                                    token=TOKENS["payments"]) as pay:
        rich, poor = key("p-rich"), key("p-poor")
        for player, amount_minor in ((rich, 10_000), (poor, 100)):
            await pay.open_wallet(player, "EUR", key=key("open"))
            await pay.deposit(player, "EUR", amount_minor, psp="stripe",
                              psp_reference=key("ref"), key=key("dep"))
    script = tmp_path / "game_service.py"
    script.write_text(readme_example())
    env = {"PATH": os.environ.get("PATH", ""), "WALLET_TARGET": f"127.0.0.1:{server.port}",
           "WALLET_TOKEN": TOKENS["game"]}
    round_id = key("r")
    first = await _run(client_venv, script, env={**env, "PLAYER_ID": rich, "ROUND_ID": round_id})
    # A game server restarted mid-round plays it again: same keys, nothing moves twice.
    again = await _run(client_venv, script, env={**env, "PLAYER_ID": rich, "ROUND_ID": round_id})
    refused = await _run(client_venv, script,
                         env={**env, "PLAYER_ID": poor, "ROUND_ID": key("r")})
    assert first.strip() == again.strip() == "balance 10350"
    assert refused.strip() == "refused: nothing moved"
