"""Optional py-spy profile of the main wallet server during the first Bet row.

py-spy samples the server from outside (no code change, `--nonblocking` so the server is
never paused) and writes collapsed stacks ("raw" format: feed them to flamegraph.pl or
speedscope). The summary says where the server's CPU went, by package of the innermost
Python frame, and which wallet_core functions held the most samples. Frames below the
event loop that py-spy cannot see (uvloop, grpc's Cython and C core) show up as time in
`Runner.run` itself, reported as "event loop + C extensions".
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

SAMPLE_RATE_HZ = 100
SUMMARY_FUNCTIONS_MAX = 8
_EVENT_LOOP_FRAME = "Runner.run"


def py_spy() -> str | None:
    """py-spy on PATH or next to this interpreter (pip install py-spy into the venv)."""
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    exe = py_spy()
    assert exe is not None
    return subprocess.Popen(  # the server is ours; py-spy only reads its memory
        [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
         "--rate", str(SAMPLE_RATE_HZ), "--format", "raw", "--nonblocking",
         "--output", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _frame(text: str) -> tuple[str, str]:
    """'Ledger._bet (wallet_core/operations.py:371)' -> ('Ledger._bet', 'wallet_core/...')."""
    name, _, where = text.partition(" (")
    return name, where.rsplit(":", 1)[0]


def _package(name: str, path: str) -> str:
    if name == _EVENT_LOOP_FRAME:
        return "event loop + C extensions (uvloop, grpc core)"
    if path.startswith("<frozen"):
        return "python"
    return path.split("/", 1)[0].removesuffix(".py")


def summarize(raw: Path) -> list[str]:
    by_package: Counter[str] = Counter()
    wallet_inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        samples = int(count_text)
        total += samples
        frames = [_frame(f) for f in stack.split(";")]
        by_package[_package(*frames[-1])] += samples
        seen = {f"{name} ({path})" for name, path in frames
                if path.startswith("wallet_core/") and not path.endswith(("cli.py",
                                                                          "__main__.py"))}
        for key in seen:
            wallet_inclusive[key] += samples
    if total == 0:
        return ["py-spy: no samples"]
    packages = ", ".join(f"{pkg} {100 * n / total:.0f}%"
                         for pkg, n in by_package.most_common(8))
    functions = ", ".join(f"`{fn}` {100 * n / total:.0f}%"
                          for fn, n in wallet_inclusive.most_common(SUMMARY_FUNCTIONS_MAX))
    return [f"py-spy, main server during the first Bet row ({total:,} samples at "
            f"{SAMPLE_RATE_HZ} Hz; raw stacks in `{raw}`). Innermost frame by package: "
            f"{packages}",
            f"py-spy, wallet_core functions by samples on the stack (inclusive): {functions}"]
