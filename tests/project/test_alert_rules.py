"""The alert rules checked by Prometheus' own tool: deploy/prometheus/alerts.yml loads,
prometheus.yml (as deploy/prometheus/local_config.py adapts it for a host) is valid, and
every alert passes its unit tests in deploy/prometheus/alerts_test.yml, which must hold, for
each alert, a case where it fires and a healthy case where it stays silent.

promtool comes with Debian's `prometheus` package; without it the promtool checks skip.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
LOCAL_CONFIG = PROMETHEUS / "local_config.py"
# promtool checks 20 rules and a few hundred series in about 2 s; this bounds a hang.
PROMTOOL_TIMEOUT_S = 120

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed: apt-get install prometheus (Debian's package has it)")


def _local_config() -> ModuleType:
    """deploy/prometheus/local_config.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("prometheus_local_config", LOCAL_CONFIG)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _promtool(*args: str) -> str:
    proc = subprocess.run(["promtool", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=PROMTOOL_TIMEOUT_S, cwd=ROOT)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def _alerts() -> dict[str, dict[str, Any]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]
            if "alert" in rule}


@pytest.mark.unit
def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    """Each alert of alerts.yml fires in some test group at or after its `for:`, and has a
    group of healthy data where every check, at or after its `for:`, expects silence."""
    duration_s = _local_config().duration_s
    alerts = _alerts()
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == ["alerts.yml"], "the tests must load the alerts.yml beside them"
    fires: set[str] = set()
    silent: set[str] = set()
    for group in tests["tests"]:
        checks: dict[str, list[bool]] = {}
        for check in group.get("alert_rule_test", []):
            name = check["alertname"]
            assert name in alerts, f"{group['name']}: no alert {name} in alerts.yml"
            if duration_s(check["eval_time"]) < duration_s(alerts[name].get("for", "0s")):
                continue  # still pending: a check of `for:`, not of the data
            checks.setdefault(name, []).append(bool(check.get("exp_alerts")))
        for name, firing in checks.items():
            (fires if any(firing) else silent).add(name)
    assert not set(alerts) - fires, f"alerts never tested firing: {sorted(set(alerts) - fires)}"
    assert not set(alerts) - silent, ("alerts with no healthy test group: "
                                      f"{sorted(set(alerts) - silent)}")


@needs_promtool
def test_promtool_checks_the_alert_rules() -> None:
    """`promtool check rules` accepts alerts.yml (syntax, PromQL, templates)."""
    output = _promtool("check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(_alerts())} rules found" in output, output


@needs_promtool
def test_promtool_checks_the_local_copy_of_the_config(tmp_path: Path) -> None:
    """prometheus.yml, with static targets and host paths from local_config.py, is a valid
    config whose rule file loads."""
    config = tmp_path / "prometheus.yml"
    proc = subprocess.run(
        [sys.executable, str(LOCAL_CONFIG), "--wallet", "127.0.0.1:9101", "--bridge",
         "127.0.0.1:9102", "--scrape-interval", "1s", "--out", str(config)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=PROMTOOL_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = _promtool("check", "config", str(config))
    assert "SUCCESS: 1 rule files found" in output, output


@needs_promtool
def test_promtool_runs_the_alert_unit_tests() -> None:
    """`promtool test rules` passes every case of alerts_test.yml."""
    _promtool("test", "rules", str(ALERTS_TEST))
