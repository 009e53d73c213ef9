"""The bridge's command lines as an operator runs them: the installed console scripts
(`walletctl`, `gateway-bridge`) in a child process, with the test's environment plus the
variables given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The virtualenv's bin folder, where `pip install -e .` put the console scripts.
BIN = Path(sys.executable).parent
# A command that has not answered by then is stuck, not slow (the PSP calls answer in 2 s).
CLI_TIMEOUT_S = 60


def _run(program: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / program), *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)


def walletctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return _run("walletctl", env, *args)


def gateway_bridge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return _run("gateway-bridge", env, *args)
