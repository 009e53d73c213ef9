#!/usr/bin/env bash
# scripts/faults.sh: run the fault scenarios (tests/faults) and print their results table.
#
# Usage:
#   scripts/faults.sh [--markdown-out FILE] [-- extra pytest args]
#
# Each scenario drives concurrent gRPC clients through every money-moving operation while a
# fault happens (SIGKILLed wallet, two wallets with one killed, Redis flushed/stopped,
# Postgres restarted, backends terminated, slow lossy network, tiny deadlines, bridge killed
# under webhook storms), then proves zero lost, zero duplicated and `wallet-core check` clean.
# Each appends one JSON line to $FAULTS_RESULTS; this script turns them into Markdown.
#
# Knobs: FAULTS_SECONDS (traffic seconds per scenario, default 6; the soak variant is
#        FAULTS_SECONDS=60 scripts/faults.sh), FAULTS_CLIENTS (default 16),
#        WALLET_TEST_DB (the suite's database name; the faults use <name>_faults).
set -euo pipefail
cd "$(dirname "$0")/.."

MARKDOWN_OUT=""
PYTEST_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --markdown-out) MARKDOWN_OUT="${2:?--markdown-out needs a file}"; shift 2 ;;
    --) shift; PYTEST_ARGS+=("$@"); break ;;
    *) PYTEST_ARGS+=("$1"); shift ;;
  esac
done

scripts/bootstrap.sh >&2
eval "$(scripts/services.sh ensure)"
export DATABASE_URL REDIS_URL
export WALLET_TEST_DB="${WALLET_TEST_DB:-wallet_test}"
RESULTS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/wallet-faults.XXXXXX")"
trap 'rm -rf "$RESULTS_DIR"' EXIT
export FAULTS_RESULTS="$RESULTS_DIR/results.jsonl"
# Longer runs need a longer per-test timeout than the suite's 120 s.
TIMEOUT_S=$(( 120 + 3 * ${FAULTS_SECONDS:-6} ))

started=$(date +%s)
status=0
.venv/bin/pytest -q -p no:cacheprovider --timeout "$TIMEOUT_S" tests/faults \
  ${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"} >&2 || status=$?
elapsed=$(( $(date +%s) - started ))

table="$(.venv/bin/python - "$FAULTS_RESULTS" "$elapsed" <<'PY'
import json, os, platform, sys
from pathlib import Path

path, elapsed = Path(sys.argv[1]), sys.argv[2]
rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
rows.sort(key=lambda r: r["scenario"])
print("| scenario | operations attempted | acknowledged | acknowledged after final retries "
      "| found in ledger | lost | duplicated | check | retries answered by a replay "
      "| seconds | errors seen by clients |")
print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
for r in rows:
    errors = ", ".join(f"{k} {v}" for k, v in sorted(r["codes"].items())
                       if k not in ("OK", "FAILED_PRECONDITION")) or "none"
    check = r["check"] if r["check"] == "clean" else "FAILED"
    print(f"| {r['scenario']} | {r['attempted']} | {r['acknowledged']} | {r['converged']} "
          f"| {r['found_in_ledger']} | {r['lost']} | {r['duplicated'] + r['mismatched']} "
          f"| {check} | {r['notes'].get('replayed_after_error', '-')} | {r['seconds']} "
          f"| {errors} |")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
            if l.startswith("model name")), platform.processor())
print(f"\n{len(rows)} scenarios, {elapsed} s in all (pytest included); "
      f"FAULTS_SECONDS={os.environ.get('FAULTS_SECONDS', '6')}, "
      f"FAULTS_CLIENTS={os.environ.get('FAULTS_CLIENTS', '16')}; "
      f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}.")
PY
)"
printf '%s\n' "$table"
if [[ -n "$MARKDOWN_OUT" ]]; then
  printf '%s\n' "$table" >"$MARKDOWN_OUT"
  echo "faults: table written to $MARKDOWN_OUT" >&2
fi
exit "$status"
