"""The incident detector's settings (docs/INCIDENTS.md): an `IncidentPolicy` read from
BRIDGE_INCIDENTS_ENABLED and BRIDGE_INCIDENT_<RULE SETTING>.

The policy itself lives with the rules (incidents/rules.py), which stay pure; this module
parses it, and holds each setting's bounds. Each default is written once, on
`IncidentPolicy`'s fields; `load` reads it from `_DEFAULTS`.
"""

from __future__ import annotations

from typing import Any

from gateway_bridge.incidents.rules import IncidentPolicy
from service_kit.settings import EnvReader

# Each rule's setting -> (low, high); BRIDGE_INCIDENT_<NAME> in the environment.
_BOUNDS: dict[str, tuple[int, int]] = {
    "interval_ms": (100, 3_600_000),
    "deposit_window_s": (1, 7 * 86_400),
    "deposit_finished_min": (1, 1_000_000),
    "deposit_failure_percent": (1, 100),
    "withdrawal_sla_s": (1, 30 * 86_400),
    "withdrawal_delayed_min": (1, 1_000_000),
    "callback_window_s": (1, 7 * 86_400),
    "callback_errors_min": (1, 1_000_000),
    "mismatch_window_s": (1, 7 * 86_400),
    "mismatch_min": (1, 1_000_000),
    "timeout_min": (1, 1_000_000),
    "probe_failures_min": (1, 100),
    "affected_max": (1, 10_000),
    "observe_every_s": (0, 86_400),
}
_DEFAULTS = IncidentPolicy()


def load(r: EnvReader) -> IncidentPolicy:
    values: dict[str, Any] = {
        name: r.integer(f"BRIDGE_INCIDENT_{name.upper()}", getattr(_DEFAULTS, name),
                        low=low, high=high)
        for name, (low, high) in _BOUNDS.items()}
    return IncidentPolicy(enabled=r.flag("BRIDGE_INCIDENTS_ENABLED", _DEFAULTS.enabled),
                          **values)
