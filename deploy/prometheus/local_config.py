"""Writes a copy of prometheus.yml for a Prometheus outside Docker (Debian's `prometheus`
package, or any binary on the host), scraping services that run on the host.

prometheus.yml stays the one source: everything in it (intervals, jobs, their settings) is
kept, and only what exists inside Compose alone is replaced. The jobs that find their
targets through Docker's DNS (`wallet`, `bridge`) get the host:port pairs given here as
static targets; the rule files Compose mounts under /etc/prometheus/ point at the files of
the same name next to prometheus.yml (alerts.yml); Prometheus' own job scrapes the address
it will listen on. A shorter scrape interval may be asked for (tests use 1s).

    .venv/bin/python deploy/prometheus/local_config.py --wallet 127.0.0.1:9101 \\
        --bridge 127.0.0.1:9102 --prometheus 127.0.0.1:9090 --out /tmp/prometheus-local.yml
    prometheus --config.file=/tmp/prometheus-local.yml --web.listen-address=127.0.0.1:9090 \\
        --storage.tsdb.path=/tmp/prometheus-local-data

The addresses are the services' WALLET_METRICS_ADDR and BRIDGE_METRICS_ADDR (`make run`
uses 127.0.0.1:9101 and 127.0.0.1:9102). `promtool check config` accepts the result.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "prometheus.yml"
# Where Compose mounts the rule files (deploy/docker-compose.yml, service prometheus).
CONTAINER_CONFIG_DIR = "/etc/prometheus/"
DISCOVERY_KEYS_SUFFIX = "_sd_configs"
SELF_JOB = "prometheus"
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800,
           "y": 31_536_000}


class ConfigError(ValueError):
    """The source config or the arguments cannot make a local config."""


def duration_s(text: str) -> float:
    """A Prometheus duration ("15s", "1m30s", "500ms") in seconds."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"not a Prometheus duration: {text!r} (e.g. 1s, 500ms, 1m30s)")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


def _rule_file(path: str) -> str:
    if not path.startswith(CONTAINER_CONFIG_DIR):
        return path  # already a host path: nothing Compose-only to replace
    local = HERE / path.removeprefix(CONTAINER_CONFIG_DIR)
    if not local.is_file():
        raise ConfigError(f"rule file {path} has no copy next to prometheus.yml ({local})")
    return str(local)


def _with_static_targets(job: dict[str, Any], targets: Sequence[str]) -> dict[str, Any]:
    local = {k: v for k, v in job.items()
             if not k.endswith(DISCOVERY_KEYS_SUFFIX) and k != "static_configs"}
    local["static_configs"] = [{"targets": list(targets)}]
    return local


def _scrape_interval(config: dict[str, Any], interval: str) -> None:
    """Scrape and evaluate every `interval`; a scrape timeout longer than the interval is
    cut to it, since Prometheus refuses a timeout above the interval."""
    interval_s = duration_s(interval)
    settings = config.setdefault("global", {})
    settings["scrape_interval"] = interval
    settings["evaluation_interval"] = interval
    if duration_s(str(settings.get("scrape_timeout", "10s"))) > interval_s:
        settings["scrape_timeout"] = interval


def local_config(source: Mapping[str, Any], *, targets: Mapping[str, Sequence[str]],
                 scrape_interval: str | None = None) -> dict[str, Any]:
    """`source` (prometheus.yml, parsed) with `targets` (job name -> host:port list) as
    static targets, host paths for the rule files and, if given, a scrape interval."""
    config = copy.deepcopy(dict(source))
    jobs = config.get("scrape_configs", [])
    unknown = set(targets) - {job["job_name"] for job in jobs}
    if unknown:
        raise ConfigError(f"prometheus.yml has no job {sorted(unknown)}")
    local_jobs = []
    for job in jobs:
        name = job["job_name"]
        if name in targets:
            local_jobs.append(_with_static_targets(job, targets[name]))
        elif any(k.endswith(DISCOVERY_KEYS_SUFFIX) for k in job):
            # Docker's DNS names resolve only inside Compose: a job left with them would
            # show no targets, which reads like a dead service.
            raise ConfigError(f"job {name!r} discovers its targets inside Compose: give its "
                              f"host:port (--{name})")
        else:
            local_jobs.append(job)
    config["scrape_configs"] = local_jobs
    config["rule_files"] = [_rule_file(p) for p in config.get("rule_files", [])]
    if scrape_interval is not None:
        _scrape_interval(config, scrape_interval)
    return config


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wallet", action="append", required=True, metavar="HOST:PORT",
                        help="a wallet's WALLET_METRICS_ADDR (repeat for replicas)")
    parser.add_argument("--bridge", action="append", required=True, metavar="HOST:PORT",
                        help="a bridge's BRIDGE_METRICS_ADDR (repeat for replicas)")
    parser.add_argument("--prometheus", metavar="HOST:PORT",
                        help="the --web.listen-address Prometheus will use (its own job); "
                             "default: as in prometheus.yml")
    parser.add_argument("--scrape-interval", metavar="DURATION",
                        help="scrape and rule evaluation interval, e.g. 1s; default: as in "
                             "prometheus.yml")
    parser.add_argument("--source", type=Path, default=SOURCE, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="where to write it; default: stdout")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    targets: dict[str, list[str]] = {"wallet": args.wallet, "bridge": args.bridge}
    if args.prometheus:
        targets[SELF_JOB] = [args.prometheus]
    for job, addresses in targets.items():
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                print(f"--{job} {address!r}: expected host:port", file=sys.stderr)
                return 2
    source = yaml.safe_load(args.source.read_text())
    try:
        config = local_config(source, targets=targets, scrape_interval=args.scrape_interval)
    except ConfigError as exc:
        print(f"local_config: {exc}", file=sys.stderr)
        return 2
    text = (f"# Generated by deploy/prometheus/local_config.py from {args.source}: edit that "
            "file, not this one.\n" + yaml.safe_dump(config, sort_keys=False))
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
