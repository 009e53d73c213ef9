"""The benchmark's report: the machine it ran on, and one Markdown table of rows.

Each row shows the median over the rounds of the run and, in brackets, the lowest and
highest round; ratios are computed per round (both figures measured minutes apart at most)
and their median is what the target is checked against. Two kinds of ratio have their own
columns: to a ceiling measured in the same run (an empty RPC, raw Postgres), and to the
baseline, a textbook wallet measured in the same rounds (loadtests/baseline_wallet.py). A row
with two targets lists them in the order of those columns, and its verdicts likewise.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Row:
    number: str
    figure: str
    value: str
    ratio: str
    target: str
    met: str
    vs_baseline: str = "—"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """'median (min–max)'; only the median when there is one value."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def count(value: float) -> str:
    return f"{value:,.0f}"


def ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def ratio(value: float) -> str:
    return f"{value:.2f}"


def times(value: float) -> str:
    return f"{value:.2f}×"


def met(value: float, *, at_least: float | None = None, at_most: float | None = None) -> str:
    if value != value:  # NaN: nothing measured
        return "n/a"
    if at_least is not None:
        return "yes" if value >= at_least else "**NO**"
    assert at_most is not None
    return "yes" if value <= at_most else "**NO**"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_facts(*, postgres: str, redis: str) -> dict[str, str]:
    load1, load5, load15 = os.getloadavg()
    return {
        "cores": f"{os.cpu_count()} ({_cpu_model()})",
        "kernel": platform.release(),
        "PostgreSQL": postgres,
        "Redis": redis,
        "Python": platform.python_version(),
        "grpcio": _version("grpcio"),
        "uvloop": _version("uvloop"),
        "asyncpg": _version("asyncpg"),
        "load average at start (1/5/15 min)": f"{load1:.2f} / {load5:.2f} / {load15:.2f}",
    }


def render(*, title: str, facts: dict[str, str], settings: dict[str, str], rows: list[Row],
           notes: list[str], command: str) -> str:
    out = [f"## {title}", "", "Machine:", ""]
    out += [f"- {k}: {v}" for k, v in facts.items()]
    out += ["", "Run:", ""]
    out += [f"- {k}: {v}" for k, v in settings.items()]
    out += ["", "Command:", "", "```", command, "```", ""]
    out += ["| row | figure | value | ratio to its ceiling | vs baseline | target | met? |",
            "|---|---|---|---|---|---|---|"]
    out += [f"| {r.number} | {r.figure} | {r.value} | {r.ratio} | {r.vs_baseline} | "
            f"{r.target} | {r.met} |" for r in rows]
    if notes:
        out += ["", "Notes:", ""]
        # A note starting with "  - " is a sub-item of the one before.
        out += [n if n.startswith("  - ") else f"- {n}" for n in notes]
    return "\n".join(out) + "\n"
