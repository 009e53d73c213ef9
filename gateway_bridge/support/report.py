"""The incident report support hands over when an incident is closed (or while it runs):
Markdown covering detection, cause, correction, validation and impact, with a PNG chart of
the affected period.

`render_markdown` is pure (an incident as `incidents.store.incident` returns it, in; text
out). `render_chart` draws with matplotlib's Agg backend, so it needs no screen. The chart
spans from an hour before detection to a quarter of an hour after resolution (or now), in
at most CHART_BUCKETS_MAX buckets: payments that settled well and badly per bucket, webhook
errors and failed probes, with a line at each stage change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway_bridge.shared.money import EXPONENTS

CHART_BUCKETS_MAX = 60
BUCKET_S_MIN = 60
LOOK_BEFORE = timedelta(hours=1)
LOOK_AFTER = timedelta(minutes=15)
PAYMENTS_LISTED_MAX = 50


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime
    end: datetime
    bucket_s: int


def chart_period(incident: Mapping[str, Any], now: datetime) -> Period:
    start = incident["detected_at"] - LOOK_BEFORE
    end = (incident["resolved_at"] or now) + LOOK_AFTER
    span_s = int((end - start).total_seconds())
    bucket_s = max(BUCKET_S_MIN, -(-span_s // CHART_BUCKETS_MAX))
    bucket_s = -(-bucket_s // 60) * 60  # whole minutes: the rejection counts are per minute
    start = start.replace(second=0, microsecond=0)
    return Period(start=start, end=end, bucket_s=bucket_s)


def money(amount_minor: int, currency: str) -> str:
    """Minor units as a decimal amount of the currency, exactly (no float)."""
    exponent = EXPONENTS.get(currency)
    if exponent is None:
        return f"{amount_minor} minor units of {currency}"
    return f"{Decimal(amount_minor).scaleb(-exponent):.{exponent}f} {currency}"


def _at(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _duration(start: datetime, end: datetime | None) -> str:
    if end is None:
        return "open"
    minutes = int((end - start).total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _events(timeline: Sequence[Mapping[str, Any]], kinds: set[str]) -> list[str]:
    return [f"- {_at(e['at'])} ({e['actor']}): {e['text']}" for e in timeline
            if e["kind"] in kinds] or ["- nothing recorded"]


def render_markdown(incident: Mapping[str, Any], *, chart_file: str | None,
                    generated_at: datetime) -> str:
    i = incident
    timeline: Sequence[Mapping[str, Any]] = i["timeline"]
    affected: Sequence[Mapping[str, Any]] = i["affected"]
    at_risk = i["at_risk"] or {}
    risk_text = ", ".join(money(v, c) for c, v in sorted(at_risk.items())) or "none measured"
    states: Sequence[Mapping[str, Any]] = i["states_now"]
    waiting = sum(s["waiting"] for s in states)
    settled = sum(s["payments"] for s in states) - waiting
    omitted = i["timeline_length"] - len(timeline)
    lines = [
        f"# Incident {i['id']}: {i['rule'].replace('_', ' ')} at {i['scope']}",
        "",
        f"Report generated {_at(generated_at)}.",
        "",
        "| | |", "|---|---|",
        f"| Stage | {i['stage']} |",
        f"| Detected | {_at(i['detected_at'])} |",
        f"| Acknowledged | {_at(i['acknowledged_at'])} by {i['acknowledged_by'] or '-'} |",
        f"| Resolved | {_at(i['resolved_at'])} by {i['resolved_by'] or '-'} |",
        f"| Duration | {_duration(i['detected_at'], i['resolved_at'])} |",
        f"| Payments affected | {i['payments']} |",
        f"| Players affected | {i['players']} |",
        f"| Money at risk | {risk_text} |",
        "",
        "## Detection", "",
        f"Rule `{i['rule']}` for `{i['scope']}`. Last measurement: {i['summary']}.", "",
        *_events(timeline, {"detected", "observed", "returned"}),
        "", "## Cause", "",
        i["cause"] or "_Not written down yet (it is given when the incident is resolved)._",
        "", "Diagnosis notes:", "",
        *_events(timeline, {"note"}),
        "", "## Correction", "",
        *_events(timeline, {"action"}),
        "", "## Validation", "",
        *_events(timeline, {"cleared", "returned"}),
        "", f"Resolution: {i['resolution'] or '_not resolved yet_'}",
        "", "## Impact", "",
        f"{i['payments']} payments of {i['players']} players; money at risk {risk_text}.",
        f"Now settled: {settled}; still waiting for an answer or a decision: {waiting}.",
        "", "| State now | Payments | Still waiting |", "|---|---|---|",
        *[f"| {s['state']} | {s['payments']} | {s['waiting']} |" for s in states],
    ]
    if chart_file:
        lines += ["", f"![Payments, webhook errors and probes over the incident]({chart_file})"]
    lines += ["", "## Timeline", ""]
    if omitted > 0:
        lines += [f"{omitted} events in the middle are left out (all "
                  f"{i['timeline_length']}: `walletctl incidents show {i['id']}`).", ""]
    lines += ["| At | Who | What | |", "|---|---|---|---|",
              *[f"| {_at(e['at'])} | {_cell(e['actor'])} | {e['kind']} | {_cell(e['text'])} |"
                for e in timeline],
              "", "## Affected payments", ""]
    if affected:
        lines += ["| Payment | Player | Amount | Seen as | Now |", "|---|---|---|---|---|",
                  *[f"| {p['payment_id']} | {_cell(p['player_id'])} | "
                    f"{money(p['amount_minor'], p['currency'])} | {p['state_seen']} | "
                    f"{p['state_now']}{' (attention)' if p['attention'] else ''} |"
                    for p in affected[:PAYMENTS_LISTED_MAX]]]
        if len(affected) > PAYMENTS_LISTED_MAX:
            lines.append(f"\n{len(affected) - PAYMENTS_LISTED_MAX} more not listed.")
    else:
        lines.append("None recorded: this rule watches signals, not payments.")
    return "\n".join(lines) + "\n"


def write(incident: Mapping[str, Any], activity: Sequence[Mapping[str, Any]], out: Path, *,
          generated_at: datetime) -> tuple[Path, Path]:
    """incident-<id>.md and incident-<id>.png in `out` (blocking: run it in a thread)."""
    out.mkdir(parents=True, exist_ok=True)
    chart = out / f"incident-{incident['id']}.png"
    render_chart(incident, activity, chart)
    markdown = out / f"incident-{incident['id']}.md"
    markdown.write_text(render_markdown(incident, chart_file=chart.name,
                                        generated_at=generated_at))
    return markdown, chart


def _bucket_text(times: Sequence[datetime]) -> str:
    seconds = int((times[1] - times[0]).total_seconds()) if len(times) > 1 else 60
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def render_chart(incident: Mapping[str, Any], activity: Sequence[Mapping[str, Any]],
                 path: Path) -> None:
    """The affected period as a PNG: bars of payments settled well and badly per bucket,
    webhook errors and failed probes on a second axis, a line per stage change."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    times = [a["bucket"] for a in activity]
    figure, axis = plt.subplots(figsize=(10, 4.5), dpi=100)
    try:
        if times:
            bucket_s = (times[1] - times[0]).total_seconds() if len(times) > 1 else 60.0
            width = bucket_s / 86_400 * 0.8  # a date axis counts in days
            ok = [a["ok"] for a in activity]
            axis.bar(times, ok, width=width, align="edge", color="#4c9a5a", label="settled")
            axis.bar(times, [a["bad"] for a in activity], width=width, align="edge",
                     bottom=ok, color="#c8553d", label="failed / held")
            other = axis.twinx()
            other.plot(times, [a["rejected"] for a in activity], color="#6b4c9a",
                       marker=".", label="webhook errors")
            other.plot(times, [a["probes_failed"] for a in activity], color="#333333",
                       linestyle="--", label="failed probes")
            other.set_ylabel("errors per bucket")
            other.set_ylim(bottom=0, top=max(1, *(max(a["rejected"], a["probes_failed"])
                                                for a in activity)) * 1.1)
            other.yaxis.set_major_locator(MaxNLocator(integer=True))
            other.legend(loc="upper right", fontsize="small")
        for e in incident["timeline"]:
            if e["kind"] in {"detected", "stage"}:
                axis.axvline(e["at"], color="#888888", linewidth=0.8)
        axis.set_title(f"Incident {incident['id']}: {incident['rule']} at {incident['scope']}")
        axis.set_ylabel(f"payments per {_bucket_text(times)}")
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend(loc="upper left", fontsize="small")
        figure.autofmt_xdate()
        figure.tight_layout()
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
