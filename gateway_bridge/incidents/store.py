"""Incident records in Postgres: the measurements the rules read, what an evaluation's
findings do to the open incidents (open, observe, clear, come back), and support's moves
along the lifecycle, each written to the incident's timeline with who did it.

Every function takes a connection inside the caller's transaction, so an evaluation or a
support command lands whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway_bridge.incidents import queries as q
from gateway_bridge.incidents.rules import (
    Affected,
    CallbackErrors,
    DepositOutcomes,
    Finding,
    Found,
    GatewayHealth,
    IncidentPolicy,
    Measurements,
    Stage,
    check_move,
    check_resolve,
)
from gateway_bridge.psp.base import ProbeResult

DETECTOR = "detector"
# A timeline read keeps its first and its last events (detection; the latest actions).
TIMELINE_FIRST_MAX = 200
TIMELINE_LAST_MAX = 800
PAYMENT_ROWS_MAX = 1000
# Signals are kept this long: the longest rule window, and a report's look-back.
SIGNALS_KEPT_S = 7 * 86_400


class IncidentNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Change:
    """What an evaluation did to one incident (logged, and counted by tests)."""

    incident_id: int
    rule: str
    scope: str
    what: str  # opened, observed, cleared, returned


async def try_evaluation_lock(conn: asyncpg.Connection) -> bool:
    """True when this transaction may evaluate (no other replica is evaluating)."""
    return bool(await conn.fetchval(q.TRY_EVALUATION_LOCK))


async def measure(conn: asyncpg.Connection, policy: IncidentPolicy, *,
                  psps: Sequence[str], circuit_open: Mapping[str, bool],
                  probe_age_max_s: int) -> Measurements:
    limit = policy.affected_max
    deposits = [DepositOutcomes(psp=r["psp"], method=r["method"], succeeded=r["succeeded"],
                                failed=r["failed"])
                for r in await conn.fetch(q.DEPOSIT_OUTCOMES, policy.deposit_window_s)]
    errors: dict[str, dict[str, int]] = {}
    for r in await conn.fetch(q.CALLBACK_ERRORS, policy.callback_window_s):
        causes = errors.setdefault(r["psp"], {})
        causes[r["cause"]] = causes.get(r["cause"], 0) + int(r["n"])
    probes = {r["psp"]: r for r in await conn.fetch(q.RECENT_PROBES,
                                                    policy.probe_failures_min,
                                                    probe_age_max_s)}
    gateways = tuple(
        GatewayHealth(psp=psp, recent_probes=tuple(probes[psp]["ups"]) if psp in probes else (),
                      circuit_open=circuit_open.get(psp, False),
                      last_reason=(probes[psp]["last_reason"] or "") if psp in probes else "")
        for psp in psps)
    failed = await conn.fetch(q.FAILED_DEPOSITS, limit, policy.deposit_window_s)
    return Measurements(
        psps=tuple(psps), deposits=tuple(deposits),
        failed_deposits=_found(failed, by_method=True),
        delayed_withdrawals=_found(await conn.fetch(q.DELAYED_WITHDRAWALS, limit,
                                                    policy.withdrawal_sla_s)),
        callback_errors=tuple(CallbackErrors(psp=p, by_cause=c) for p, c in errors.items()),
        mismatches=_found(await conn.fetch(q.MISMATCHES, limit, policy.mismatch_window_s)),
        timeouts=_found(await conn.fetch(q.TIMEOUTS, limit)),
        gateways=gateways,
        in_flight=_found(await conn.fetch(q.IN_FLIGHT, limit)))


def _found(rows: Iterable[asyncpg.Record], *, by_method: bool = False) -> dict[str, Found]:
    listed: dict[str, list[Affected]] = {}
    totals: dict[str, int] = {}
    for r in rows:
        key = f"{r['psp']}/{r['method']}" if by_method else r["psp"]
        totals[key] = r["total"]
        listed.setdefault(key, []).append(Affected(
            payment_id=r["id"], player_id=r["player_id"], currency=r["currency"],
            amount_minor=r["amount_minor"], state=r["state"]))
    return {k: Found(total=totals[k], listed=tuple(v)) for k, v in listed.items()}


async def apply(conn: asyncpg.Connection, policy: IncidentPolicy,
                findings: Sequence[Finding]) -> list[Change]:
    """Open an incident for each finding that fired without one; for open incidents, note
    what changed. An open incident whose scope was not measured this time counts as clear
    (nothing failed where nothing finished)."""
    open_rows = {(r["rule"], r["scope"]): r
                 for r in await conn.fetch(q.OPEN_INCIDENTS_FOR_UPDATE)}
    quiet = {(r["rule"], r["scope"]) for r in await conn.fetch(q.QUIET_SCOPES)}
    changes: list[Change] = []
    seen: set[tuple[str, str]] = set()
    for f in findings:
        key = (f.rule.value, f.scope)
        seen.add(key)
        if key in quiet and not f.fired:
            await conn.execute(q.UNQUIET, *key)
        row = open_rows.get(key)
        if row is None:
            if f.fired and key not in quiet:
                changes += await _open(conn, f)
        elif f.fired:
            changes += await _seen_again(conn, policy, row, f)
        elif row["cleared_at"] is None:
            changes.append(await _cleared(conn, row, f.summary))
    for key, row in open_rows.items():
        if key not in seen and row["cleared_at"] is None:
            changes.append(await _cleared(conn, row, "nothing of this kind measured in the "
                                                     "window any more"))
    return changes


async def open_counts(conn: asyncpg.Connection) -> dict[tuple[str, str], int]:
    return {(r["rule"], r["stage"]): r["n"] for r in await conn.fetch(q.OPEN_COUNTS)}


async def _open(conn: asyncpg.Connection, f: Finding) -> list[Change]:
    incident_id = await conn.fetchval(q.INSERT_INCIDENT, f.rule.value, f.scope, f.psp,
                                      f.summary, dict(f.observed))
    if incident_id is None:  # another evaluation opened it a moment ago
        return []
    await _event(conn, incident_id, "detected", DETECTOR, f.summary, dict(f.observed))
    await _add_payments(conn, incident_id, f.affected)
    return [Change(incident_id, f.rule.value, f.scope, "opened")]


async def _seen_again(conn: asyncpg.Connection, policy: IncidentPolicy, row: asyncpg.Record,
                      f: Finding) -> list[Change]:
    incident_id: int = row["id"]
    changes: list[Change] = []
    await conn.execute(q.SEEN_AGAIN, incident_id, f.summary, dict(f.observed))
    added = await _add_payments(conn, incident_id, f.affected)
    if row["cleared_at"] is not None:
        await _event(conn, incident_id, "returned", DETECTOR,
                     f"the condition is back: {f.summary}", dict(f.observed))
        changes.append(Change(incident_id, f.rule.value, f.scope, "returned"))
        if row["stage"] == Stage.VALIDATING:
            await conn.execute(q.SET_STAGE, incident_id, Stage.CORRECTING.value, None)
            await _event(conn, incident_id, "stage", DETECTOR,
                         "validating -> correcting: validation failed, the condition came "
                         "back")
        return changes
    last = await conn.fetchval(q.LAST_OBSERVATION, incident_id)
    quiet_s = (datetime.now(UTC) - last).total_seconds() if last else policy.observe_every_s
    if added or (f.summary != row["summary"] and quiet_s >= policy.observe_every_s):
        more = f" ({added} more payments affected)" if added else ""
        await _event(conn, incident_id, "observed", DETECTOR, f.summary + more,
                     dict(f.observed))
        changes.append(Change(incident_id, f.rule.value, f.scope, "observed"))
    return changes


async def _cleared(conn: asyncpg.Connection, row: asyncpg.Record, summary: str) -> Change:
    await conn.execute(q.CLEARED, row["id"])
    text = f"the condition is clear: {summary}"
    if row["stage"] == Stage.VALIDATING:
        text += "; validation passed, ready to resolve"
    await _event(conn, row["id"], "cleared", DETECTOR, text)
    return Change(row["id"], row["rule"], row["scope"], "cleared")


async def _add_payments(conn: asyncpg.Connection, incident_id: int,
                        affected: Sequence[Affected]) -> int:
    if not affected:
        return 0
    added = await conn.fetch(
        q.ADD_PAYMENTS, incident_id, [a.payment_id for a in affected],
        [a.player_id for a in affected], [a.currency for a in affected],
        [a.amount_minor for a in affected], [a.state for a in affected])
    return len(added)


async def _event(conn: asyncpg.Connection, incident_id: int, kind: str, actor: str,
                 text: str, data: Mapping[str, Any] | None = None) -> None:
    await conn.execute(q.ADD_EVENT, incident_id, kind, actor, text[:2000],
                       dict(data) if data is not None else None)


# --- Signals the rules read ---------------------------------------------------------------


async def record_probes(conn: asyncpg.Connection, results: Mapping[str, ProbeResult]) -> None:
    names = list(results)
    await conn.execute(q.RECORD_PROBES, names, [results[n].up for n in names],
                       [results[n].status for n in names],
                       [results[n].reason[:200] for n in names],
                       [int(results[n].duration_s * 1000) for n in names])


async def count_rejection(conn: asyncpg.Connection, psp: str, cause: str, count: int) -> None:
    """Adds rejected webhooks to the running totals and to this minute's count, which the
    callback-error rule reads."""
    await conn.execute(q.COUNT_REJECTION_TOTAL, psp, cause, count)
    await conn.execute(q.COUNT_REJECTION_MINUTE, psp, cause, count)


async def prune_signals(conn: asyncpg.Connection) -> None:
    await conn.execute(q.PRUNE_REJECTIONS, SIGNALS_KEPT_S)
    await conn.execute(q.PRUNE_PROBES, SIGNALS_KEPT_S)


# --- Support --------------------------------------------------------------------------------


def incident_view(row: asyncpg.Record) -> dict[str, Any]:
    view = dict(row)
    if "at_risk" in view:
        view["at_risk"] = {c: int(v) for c, v in (view["at_risk"] or {}).items()}
    return view


async def list_incidents(conn: asyncpg.Connection, *, stage: Stage | None,
                         include_resolved: bool, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(q.LIST_INCIDENTS, stage.value if stage else None,
                            include_resolved or stage is Stage.RESOLVED, limit)
    return [incident_view(r) for r in rows]


async def incident(conn: asyncpg.Connection, incident_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(q.INCIDENT, incident_id)
    if row is None:
        raise IncidentNotFound(f"no incident {incident_id}")
    view = incident_view(row)
    view["timeline"] = [dict(r) for r in await conn.fetch(
        q.TIMELINE, incident_id, TIMELINE_FIRST_MAX, TIMELINE_LAST_MAX)]
    view["timeline_length"] = await conn.fetchval(q.TIMELINE_LENGTH, incident_id)
    view["affected"] = [dict(r) for r in await conn.fetch(q.INCIDENT_PAYMENTS, incident_id,
                                                          PAYMENT_ROWS_MAX)]
    view["states_now"] = [dict(r) for r in await conn.fetch(q.STATES_NOW, incident_id)]
    return view


async def lock(conn: asyncpg.Connection, incident_id: int) -> None:
    """Lock an incident for the rest of the transaction (before a payment: see
    support.resolution for the order)."""
    await _locked(conn, incident_id)


async def _locked(conn: asyncpg.Connection, incident_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(q.INCIDENT_FOR_UPDATE, incident_id)
    if row is None:
        raise IncidentNotFound(f"no incident {incident_id}")
    return row


async def move(conn: asyncpg.Connection, incident_id: int, target: Stage, *, actor: str,
               note: str) -> Stage:
    """One step along the lifecycle (acknowledging is detected -> diagnosing); raises
    LifecycleError when the process does not allow it."""
    row = await _locked(conn, incident_id)
    current = Stage(row["stage"])
    check_move(current, target)
    await conn.execute(q.SET_STAGE, incident_id, target.value, actor)
    await _event(conn, incident_id, "stage", actor, f"{current} -> {target}: {note}")
    return current


async def resolve(conn: asyncpg.Connection, incident_id: int, *, actor: str, cause: str,
                  resolution: str, force: bool) -> None:
    row = await _locked(conn, incident_id)
    check_resolve(Stage(row["stage"]), condition_clear=row["cleared_at"] is not None,
                  forced=force)
    await conn.execute(q.RESOLVE, incident_id, actor, cause, resolution)
    forced = " (forced)" if force else ""
    await _event(conn, incident_id, "stage", actor,
                 f"{row['stage']} -> resolved{forced}. Cause: {cause}. Resolution: "
                 f"{resolution}")


async def note(conn: asyncpg.Connection, incident_id: int, *, actor: str, text: str,
               kind: str = "note", data: Mapping[str, Any] | None = None) -> None:
    """A note, or an action support took (kind "action"), on the timeline; kept after
    resolution too (a late finding belongs in the record)."""
    await _locked(conn, incident_id)
    await _event(conn, incident_id, kind, actor, text, data)


async def open_incidents_of_payment(conn: asyncpg.Connection, payment_id: str) -> list[int]:
    return [r["incident_id"] for r in await conn.fetch(q.INCIDENTS_OF_PAYMENT, payment_id)]


async def activity(conn: asyncpg.Connection, *, psp: str, start: datetime, end: datetime,
                   bucket_s: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(q.ACTIVITY, psp, start, end, bucket_s)]

