"""Incident detection rules and the incident lifecycle, as plain Python (no I/O).

Each rule takes what the detector measured (gateway_bridge/incidents/detector.py reads it
from Postgres and the PSP adapters) and says, per scope (a PSP, or a PSP and payment
method), whether it fires, with a one-line summary support can read and the numbers behind
it. The six rules are the typical problems support watches (docs/ARCHITECTURE.md): failed
deposits, delayed withdrawals, callback errors, currency mismatch, transaction timeout,
gateway downtime.

The lifecycle follows support's process: detected -> diagnosing -> correcting ->
validating -> resolved. The detector never resolves an incident: a person does, once the
correction is validated (the condition is clear), so every incident ends with a cause and a
resolution someone wrote down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Rule(StrEnum):
    FAILED_DEPOSITS = "failed_deposits"
    DELAYED_WITHDRAWALS = "delayed_withdrawals"
    CALLBACK_ERRORS = "callback_errors"
    CURRENCY_MISMATCH = "currency_mismatch"
    TRANSACTION_TIMEOUT = "transaction_timeout"
    GATEWAY_DOWNTIME = "gateway_downtime"


class Stage(StrEnum):
    DETECTED = "detected"
    DIAGNOSING = "diagnosing"
    CORRECTING = "correcting"
    VALIDATING = "validating"
    RESOLVED = "resolved"


# Forward one step at a time, as support works; validation that fails goes back to
# correcting. Resolving is its own command (it needs a cause and a resolution).
_NEXT: dict[Stage, frozenset[Stage]] = {
    Stage.DETECTED: frozenset({Stage.DIAGNOSING}),
    Stage.DIAGNOSING: frozenset({Stage.CORRECTING}),
    Stage.CORRECTING: frozenset({Stage.VALIDATING}),
    Stage.VALIDATING: frozenset({Stage.CORRECTING}),
    Stage.RESOLVED: frozenset(),
}


class LifecycleError(ValueError):
    """A stage change support asked for that the process does not allow; says why."""


def check_move(current: Stage, target: Stage) -> None:
    if target not in _NEXT[current]:
        allowed = ", ".join(sorted(_NEXT[current])) or "nothing (it is resolved)"
        raise LifecycleError(f"an incident in {current} can move to {allowed}, not {target}")


def check_resolve(current: Stage, *, condition_clear: bool, forced: bool) -> None:
    """Resolved after validation with the condition clear; anything else (a false alarm, a
    condition nobody can clear) only when support says so explicitly."""
    if current is Stage.RESOLVED:
        raise LifecycleError("the incident is already resolved")
    if forced:
        return
    if current is not Stage.VALIDATING:
        raise LifecycleError(f"the incident is in {current}; resolve after validating (or "
                             "--force with the reason in the resolution)")
    if not condition_clear:
        raise LifecycleError("the condition still holds: validation has not passed (or "
                             "--force with the reason in the resolution)")


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentPolicy:
    """Thresholds and windows of every rule (BRIDGE_INCIDENT_*, docs/INCIDENTS.md)."""

    enabled: bool = True
    interval_ms: int = 30_000
    # failed deposits: share of finished deposits that failed, per PSP and method
    deposit_window_s: int = 900
    deposit_finished_min: int = 10
    deposit_failure_percent: int = 30
    # delayed withdrawals: reserved (or paying out) longer than the SLA
    withdrawal_sla_s: int = 3600
    withdrawal_delayed_min: int = 1
    # callback errors: refused webhooks (signature, stale, malformed, unsigned) and events
    # about payments nobody knows, per PSP
    callback_window_s: int = 900
    callback_errors_min: int = 5
    # currency or amount mismatch: payments held as mismatch, updated within the window
    mismatch_window_s: int = 3600
    mismatch_min: int = 1
    # transaction timeout: payments no PSP answer settled within the limits (timed_out)
    timeout_min: int = 1
    # gateway downtime: this many failed probes in a row, or the circuit breaker open
    probe_failures_min: int = 3
    # payments copied into an incident per rule, scope and evaluation (the rest are
    # counted, not listed)
    affected_max: int = 500
    # a quieter rule writes an observation to the timeline at most this often
    observe_every_s: int = 900


@dataclass(frozen=True, slots=True, kw_only=True)
class Affected:
    payment_id: str
    player_id: str
    currency: str
    amount_minor: int
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One rule's verdict for one scope. `fired` False means the scope was measured and is
    fine, which is how an open incident learns its condition has cleared."""

    rule: Rule
    scope: str
    psp: str
    fired: bool
    summary: str
    observed: Mapping[str, Any] = field(default_factory=dict)
    affected: tuple[Affected, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """Payments a rule counts in one scope: how many there are, and the first of them
    (at most `affected_max`) to copy into the incident."""

    total: int
    listed: tuple[Affected, ...] = ()


NOTHING = Found(total=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class DepositOutcomes:
    psp: str
    method: str
    succeeded: int
    failed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackErrors:
    psp: str
    # cause -> count in the window; "unknown_payment" for events nobody's payment
    by_cause: Mapping[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayHealth:
    psp: str
    # the latest probes, newest first (True = answered)
    recent_probes: tuple[bool, ...]
    circuit_open: bool
    last_reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurements:
    """What one evaluation saw. `psps` is every PSP the bridge runs, so a rule with nothing
    to report for a PSP still yields a quiet finding for it."""

    psps: tuple[str, ...]
    deposits: tuple[DepositOutcomes, ...] = ()
    # keyed by "<psp>/<method>" for failed deposits, by PSP for the rest
    failed_deposits: Mapping[str, Found] = field(default_factory=dict)
    delayed_withdrawals: Mapping[str, Found] = field(default_factory=dict)
    callback_errors: tuple[CallbackErrors, ...] = ()
    mismatches: Mapping[str, Found] = field(default_factory=dict)
    timeouts: Mapping[str, Found] = field(default_factory=dict)
    gateways: tuple[GatewayHealth, ...] = ()
    # payments in flight per PSP: what a gateway outage puts at risk
    in_flight: Mapping[str, Found] = field(default_factory=dict)


def evaluate(policy: IncidentPolicy, m: Measurements) -> list[Finding]:
    return [*_failed_deposits(policy, m), *_delayed_withdrawals(policy, m),
            *_callback_errors(policy, m), *_counted(policy, m, Rule.CURRENCY_MISMATCH),
            *_counted(policy, m, Rule.TRANSACTION_TIMEOUT), *_gateway_downtime(policy, m)]


def _failed_deposits(policy: IncidentPolicy, m: Measurements) -> Iterable[Finding]:
    for d in m.deposits:
        finished = d.succeeded + d.failed
        # integer comparison of failed/finished against the percentage: no float ratios
        fired = (finished >= policy.deposit_finished_min
                 and d.failed * 100 >= policy.deposit_failure_percent * finished)
        percent = d.failed * 100 // finished if finished else 0
        scope = f"{d.psp}/{d.method}"
        affected = m.failed_deposits.get(scope, NOTHING).listed
        yield Finding(
            rule=Rule.FAILED_DEPOSITS, scope=scope, psp=d.psp, fired=fired,
            summary=(f"{d.failed} of {finished} deposits at {scope} failed in the last "
                     f"{policy.deposit_window_s // 60} min ({percent}%; alert at "
                     f"{policy.deposit_failure_percent}% of at least "
                     f"{policy.deposit_finished_min})"),
            observed={"failed": d.failed, "succeeded": d.succeeded, "percent": percent,
                      "window_s": policy.deposit_window_s,
                      "threshold_percent": policy.deposit_failure_percent,
                      "finished_min": policy.deposit_finished_min},
            affected=affected if fired else ())


def _delayed_withdrawals(policy: IncidentPolicy, m: Measurements) -> Iterable[Finding]:
    for psp in m.psps:
        delayed = m.delayed_withdrawals.get(psp, NOTHING)
        fired = delayed.total >= policy.withdrawal_delayed_min
        yield Finding(
            rule=Rule.DELAYED_WITHDRAWALS, scope=psp, psp=psp, fired=fired,
            summary=(f"{delayed.total} withdrawals at {psp} reserved for more than "
                     f"{_duration(policy.withdrawal_sla_s)} without being paid out"),
            observed={"delayed": delayed.total, "sla_s": policy.withdrawal_sla_s,
                      "delayed_min": policy.withdrawal_delayed_min},
            affected=delayed.listed if fired else ())


def _callback_errors(policy: IncidentPolicy, m: Measurements) -> Iterable[Finding]:
    by_psp = {c.psp: c for c in m.callback_errors}
    for psp in sorted({*m.psps, *by_psp}):
        causes = dict(by_psp[psp].by_cause) if psp in by_psp else {}
        total = sum(causes.values())
        detail = ", ".join(f"{n} {cause}" for cause, n in sorted(causes.items())) or "none"
        yield Finding(
            rule=Rule.CALLBACK_ERRORS, scope=psp, psp=psp,
            fired=total >= policy.callback_errors_min,
            summary=(f"{total} webhook errors from {psp} in the last "
                     f"{policy.callback_window_s // 60} min ({detail}; alert at "
                     f"{policy.callback_errors_min})"),
            observed={"errors": total, "by_cause": causes,
                      "window_s": policy.callback_window_s,
                      "errors_min": policy.callback_errors_min})


def _counted(policy: IncidentPolicy, m: Measurements, rule: Rule) -> Iterable[Finding]:
    if rule is Rule.CURRENCY_MISMATCH:
        found, least = m.mismatches, policy.mismatch_min
        what = (f"payment(s) held for a currency or amount that differs from ours in the "
                f"last {policy.mismatch_window_s // 60} min")
    else:
        found, least = m.timeouts, policy.timeout_min
        what = "payment(s) timed out: no final answer from the PSP within the limits"
    for psp in m.psps:
        rows = found.get(psp, NOTHING)
        fired = rows.total >= least
        yield Finding(rule=rule, scope=psp, psp=psp, fired=fired,
                      summary=f"{psp}: {rows.total} {what}",
                      observed={"payments": rows.total, "count_min": least},
                      affected=rows.listed if fired else ())


def _gateway_downtime(policy: IncidentPolicy, m: Measurements) -> Iterable[Finding]:
    for g in m.gateways:
        run = 0
        for up in g.recent_probes:
            if up:
                break
            run += 1
        probes_down = run >= policy.probe_failures_min
        fired = probes_down or g.circuit_open
        why = []
        if probes_down:
            why.append(f"{run} health probes in a row failed"
                       + (f" ({g.last_reason})" if g.last_reason else ""))
        if g.circuit_open:
            why.append("the circuit breaker is open")
        in_flight = m.in_flight.get(g.psp, NOTHING)
        yield Finding(
            rule=Rule.GATEWAY_DOWNTIME, scope=g.psp, psp=g.psp, fired=fired,
            summary=(f"{g.psp} is down: " + " and ".join(why) if fired
                     else f"{g.psp} answers its health probes"),
            observed={"probes_failed_in_a_row": run, "circuit_open": g.circuit_open,
                      "probe_failures_min": policy.probe_failures_min,
                      "payments_in_flight": in_flight.total},
            affected=in_flight.listed if fired else ())


def money_at_risk(affected: Iterable[Affected]) -> dict[str, int]:
    """Sum of the affected payments' amounts, per currency (never added across currencies)."""
    totals: dict[str, int] = {}
    for a in affected:
        totals[a.currency] = totals.get(a.currency, 0) + a.amount_minor
    return dict(sorted(totals.items()))


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
