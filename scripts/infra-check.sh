#!/usr/bin/env bash
# scripts/infra-check.sh (`make infra-check`): the wallet and the bridge on real engines, each
# started by the checks on loopback ports and stopped afterwards (tests/infra, docs/SCALING.md):
#
#   - Postgres failover: a primary with a synchronous standby, the primary SIGKILLed under the
#     fault-scenario load and the standby promoted; then the same with an asynchronous one;
#   - PgBouncer in transaction mode in front of the wallet and the bridge;
#   - a six-node Redis Cluster with a primary killed mid-load;
#   - Debian's Prometheus scraping the running services, and every alert rule's unit test.
#
# Installs what it needs with apt-get when root (postgresql, pgbouncer, redis-server,
# prometheus), prints a results table and exits non-zero if any check failed.
# Usage: scripts/infra-check.sh [-k expression] (pytest's -k picks checks by name).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v pgbouncer >/dev/null || [[ -x /usr/sbin/pgbouncer ]] || need+=(pgbouncer)
command -v promtool >/dev/null || need+=(prometheus)
command -v redis-server >/dev/null || need+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/pg_basebackup" >/dev/null || need+=(postgresql)
if [[ ${#need[@]} -gt 0 ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "infra-check: installing ${need[*]} with apt-get" >&2
    apt-get update -qq </dev/null >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" </dev/null >&2
  else
    echo "infra-check: needs ${need[*]} (apt-get install ${need[*]}, as root)" >&2
    exit 2
  fi
fi

scripts/bootstrap.sh >&2
eval "$(scripts/services.sh ensure)"
export DATABASE_URL REDIS_URL
export WALLET_TEST_DB="${WALLET_TEST_DB:-wallet_test}"
RESULTS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/wallet-infra.XXXXXX")"
trap 'rm -rf "$RESULTS_DIR"' EXIT
export INFRA_RESULTS="$RESULTS_DIR/results.jsonl" INFRA_CHECK=1

started=$(date +%s)
status=0
.venv/bin/pytest -q -p no:cacheprovider -p no:randomly --timeout 900 tests/infra "$@" >&2 \
  || status=$?
elapsed=$(( $(date +%s) - started ))

.venv/bin/python - "$INFRA_RESULTS" "$elapsed" <<'PY'
import json, os, platform, sys
from pathlib import Path

path, elapsed = Path(sys.argv[1]), sys.argv[2]
rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
print("| check | result | seconds | figures |")
print("|---|---|---:|---|")
for r in rows:
    figures = "; ".join(f"{k} {v}" for k, v in r["figures"].items()) or "-"
    print(f"| {r['check']} | {'pass' if r['passed'] else 'FAIL'} | {r['seconds']} | {figures} |")
print(f"\n{len(rows)} checks, {elapsed} s in all; {os.cpu_count()} cores, "
      f"Python {platform.python_version()}.")
PY
if [[ $status == 0 ]] && ! grep -q . "$INFRA_RESULTS" 2>/dev/null; then
  echo "infra-check: no check ran" >&2
  status=1
fi
exit "$status"
