"""Pass/fail thresholds that set a headless Locust run's exit code.

Each scenario calls `install(...)` with its own defaults; the command line and the
environment override them:

| option | environment | meaning |
|---|---|---|
| `--fail-ratio-max` | `LOADTEST_FAIL_RATIO_MAX` | failed requests / all requests, at most |
| `--p99-ms-max` | `LOADTEST_P99_MS_MAX` | p99 of all requests of the run, at most (ms) |
| `--requests-min` | `LOADTEST_REQUESTS_MIN` | a run that made fewer requests fails |

Besides these, a run always fails when a scenario's correctness check fired (request_type
"check": a replay that differed from the first answer, a batch that lost an outcome) or a
task raised an exception nobody handled (a bug in the scenario or an answer of the wrong
shape): those are broken invariants, not noise, so no ratio tolerates them.

The defaults are generous on purpose: the wallet, Postgres, Redis and Locust share two
cores here, and these thresholds catch a broken system, not a slow machine. The benchmark
(`loadtests/bench*`) measures speed; timings never gate tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from locust import events
from locust.env import Environment

log = logging.getLogger("loadtests.thresholds")

# Request type of the scenarios' correctness checks; any failure of this type fails the run.
CHECK_REQUEST_TYPE = "check"
# Caps a check's text in Locust's error table (one row per distinct text, so it must also
# not embed ids that differ per call).
CHECK_TEXT_MAX_CHARS = 200
# Locust's stats keep response times in buckets; p99 below ~10 ms is rounded to 1 ms and
# above 1 s to 100 ms, which is precise enough for a gate this wide.
P99_PERCENTILE = 0.99


@dataclass(frozen=True)
class Limits:
    fail_ratio_max: float
    p99_ms_max: float
    requests_min: int


def _validated(limits: Limits) -> Limits:
    if not 0 <= limits.fail_ratio_max <= 1:
        raise ValueError(f"fail ratio max {limits.fail_ratio_max} must be within [0, 1]")
    if limits.p99_ms_max <= 0:
        raise ValueError(f"p99 max {limits.p99_ms_max} ms must be positive")
    if limits.requests_min < 0:
        raise ValueError(f"requests min {limits.requests_min} must not be negative")
    return limits


def install(*, fail_ratio_max: float = 0.01, p99_ms_max: float = 1000,
            requests_min: int = 1) -> None:
    """Registers the options and the `quitting` hook with this scenario's defaults."""
    defaults = _validated(Limits(fail_ratio_max, p99_ms_max, requests_min))

    @events.init_command_line_parser.add_listener
    def _options(parser: Any, **_kwargs: Any) -> None:
        group = parser.add_argument_group("thresholds (exit code 1 when one is exceeded)")
        group.add_argument("--fail-ratio-max", type=float, env_var="LOADTEST_FAIL_RATIO_MAX",
                           default=defaults.fail_ratio_max,
                           help=f"failed/all requests, at most (default {fail_ratio_max})")
        group.add_argument("--p99-ms-max", type=float, env_var="LOADTEST_P99_MS_MAX",
                           default=defaults.p99_ms_max,
                           help=f"p99 of all requests in ms, at most (default {p99_ms_max})")
        group.add_argument("--requests-min", type=int, env_var="LOADTEST_REQUESTS_MIN",
                           default=defaults.requests_min,
                           help=f"fewest requests a passing run made (default {requests_min})")

    @events.quitting.add_listener
    def _judge(environment: Environment, **_kwargs: Any) -> None:
        options = environment.parsed_options
        limits = _validated(Limits(
            fail_ratio_max=getattr(options, "fail_ratio_max", defaults.fail_ratio_max),
            p99_ms_max=getattr(options, "p99_ms_max", defaults.p99_ms_max),
            requests_min=getattr(options, "requests_min", defaults.requests_min)))
        problems = violations(environment, limits)
        for problem in problems:
            log.error("threshold: %s", problem)
        if not problems:
            log.info("thresholds met: %s", summary(environment))
        environment.process_exit_code = 1 if problems else 0


def fire_check(environment: Environment, name: str, problem: str) -> None:
    """Report a broken invariant a scenario saw (e.g. a replay that differs from the first
    answer). Only failures are fired, so checks never dilute the latency stats."""
    environment.events.request.fire(
        request_type=CHECK_REQUEST_TYPE, name=name, response_time=0, response_length=0,
        exception=AssertionError(problem[:CHECK_TEXT_MAX_CHARS]), context={})


def summary(environment: Environment) -> str:
    total = environment.stats.total
    return (f"{total.num_requests} requests, {total.num_failures} failed, "
            f"{total.total_rps:.1f} req/s, p50 {total.get_response_time_percentile(0.5):.0f} ms, "
            f"p99 {total.get_response_time_percentile(P99_PERCENTILE):.0f} ms")


def violations(environment: Environment, limits: Limits) -> list[str]:
    """Every threshold the run exceeded, in words; empty when it passed."""
    total = environment.stats.total
    problems: list[str] = []
    if total.num_requests < limits.requests_min:
        problems.append(f"{total.num_requests} requests made, fewer than {limits.requests_min}")
    if total.num_requests and total.fail_ratio > limits.fail_ratio_max:
        problems.append(f"fail ratio {total.fail_ratio:.4f} > {limits.fail_ratio_max}")
    p99_ms = total.get_response_time_percentile(P99_PERCENTILE) if total.num_requests else 0
    if p99_ms > limits.p99_ms_max:
        problems.append(f"p99 {p99_ms:.0f} ms > {limits.p99_ms_max:.0f} ms")
    checks = sum(entry.num_failures for (_name, kind), entry in environment.stats.entries.items()
                 if kind == CHECK_REQUEST_TYPE)
    if checks:
        problems.append(f"{checks} correctness check(s) failed (request type 'check')")
    runner = environment.runner
    if runner is not None and runner.exceptions:
        count = sum(item["count"] for item in runner.exceptions.values())
        problems.append(f"{count} unhandled exception(s) in tasks (see the log above)")
    return problems
