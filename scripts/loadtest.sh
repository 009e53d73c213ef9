#!/usr/bin/env bash
# Run one Locust scenario headless against the running system, bounded in users and time,
# and write its CSV and HTML reports to .run/loadtests/<scenario>-<timestamp>/. The exit code
# is the thresholds' verdict (loadtests/thresholds.py): 0 passed, 1 a threshold was exceeded.
#
#   scripts/loadtest.sh <game|bonus|retry_storm|webhooks|batch> [duration] [-- locust args]
#
# duration: 30s by default, e.g. 45s or 2m, at most 10m. LOADTEST_USERS (default 20; 8 for
# batch, whose every call carries LOADTEST_BATCH_OPS=100 operations; at most 200) and
# LOADTEST_SPAWN_RATE (users started per second, default 10) bound the load.
# The services are those `make run` starts (wallet 127.0.0.1:50051, bridge 127.0.0.1:8080,
# simulator 127.0.0.1:8090; WALLET_TARGET, BRIDGE_URL, SIM_URL override); when the ones the
# scenario needs do not answer, this starts them with scripts/run.sh and leaves them running
# (stop them with `make stop`). Tokens and keys come from .run/ as `make run` wrote them.
set -euo pipefail
cd "$(dirname "$0")/.."

USERS_MAX=200
DURATION_S_MAX=600
# Locust gets this long beyond the run time to stop users and write its reports.
SHUTDOWN_GRACE_S=60

usage() {
    echo "usage: scripts/loadtest.sh <scenario> [duration] [-- locust args]" >&2
    local names
    names=$(cd loadtests/locustfiles && ls -- *.py | grep -v '^_' | sed 's/\.py$//' | tr '\n' ' ')
    echo "scenarios: $names" >&2
    exit 2
}
[ $# -ge 1 ] || usage
scenario=$1; shift
locustfile="loadtests/locustfiles/$scenario.py"
[[ "$scenario" =~ ^[a-z_]+$ && -f "$locustfile" ]] || usage
duration=30s
if [ $# -ge 1 ] && [ "$1" != "--" ]; then duration=$1; shift; fi
[ "${1:-}" = "--" ] && shift
[[ "$duration" =~ ^([0-9]+)([sm]?)$ ]] || { echo "duration must look like 30s or 2m" >&2; exit 2; }
duration_s=${BASH_REMATCH[1]}
[ "${BASH_REMATCH[2]}" = "m" ] && duration_s=$((duration_s * 60))
((duration_s >= 1 && duration_s <= DURATION_S_MAX)) || {
    echo "duration must be between 1 s and $DURATION_S_MAX s" >&2; exit 2; }
users_default=20
[ "$scenario" = batch ] && users_default=8
users=${LOADTEST_USERS:-$users_default}
spawn_rate=${LOADTEST_SPAWN_RATE:-10}
[[ "$users" =~ ^[0-9]+$ ]] && ((users >= 1 && users <= USERS_MAX)) || {
    echo "LOADTEST_USERS must be 1..$USERS_MAX" >&2; exit 2; }

wallet_addr=${WALLET_TARGET:-127.0.0.1:50051}
bridge_url=${BRIDGE_URL:-http://127.0.0.1:8080}
export SIM_URL=${SIM_URL:-http://127.0.0.1:8090}

wallet_healthy() {
    .venv/bin/python -c "
import grpc, sys
from grpc_health.v1 import health_pb2, health_pb2_grpc
ch = grpc.insecure_channel(sys.argv[1])
try:
    r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
    sys.exit(0 if r.status == health_pb2.HealthCheckResponse.SERVING else 1)
except grpc.RpcError:
    sys.exit(1)" "$wallet_addr" >/dev/null 2>&1
}
http_ok() {
    .venv/bin/python -c "import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=1)" \
        "$1" >/dev/null 2>&1
}
services_up() {
    wallet_healthy || return 1
    [ "$scenario" != webhooks ] && return 0
    http_ok "$bridge_url/readyz" && http_ok "$SIM_URL/_sim/knobs"
}

mkdir -p .run/loadtests
if ! services_up; then
    echo "loadtest: the services do not answer; starting them with scripts/run.sh" \
         "(log .run/loadtests/run.log; they keep running: make stop)" >&2
    scripts/run.sh > .run/loadtests/run.log 2>&1 || {
        tail -20 .run/loadtests/run.log >&2; exit 1; }
    services_up || { echo "loadtest: the services still do not answer" >&2; exit 1; }
fi

export WALLET_CALLERS_FILE=${WALLET_CALLERS_FILE:-$PWD/.run/callers.json}
export BRIDGE_API_KEYS_FILE=${BRIDGE_API_KEYS_FILE:-$PWD/.run/bridge-api-keys.json}
if [ -z "${BRIDGE_STRIPE_WEBHOOK_SECRET:-}" ] && [ -f .run/bridge.env ]; then
    # Only this one secret, for the hand-signed Stripe webhooks; nothing else from the file.
    BRIDGE_STRIPE_WEBHOOK_SECRET=$(bash -c \
        'source .run/bridge.env; echo "$BRIDGE_STRIPE_WEBHOOK_SECRET"')
    export BRIDGE_STRIPE_WEBHOOK_SECRET
fi
host="grpc://$wallet_addr"
[ "$scenario" = webhooks ] && host=$bridge_url

out=".run/loadtests/$scenario-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
echo "loadtest: $scenario, $users users, ${duration_s}s against $host; reports in $out" >&2
set +e
timeout --signal=INT --kill-after=30 $((duration_s + SHUTDOWN_GRACE_S)) \
    .venv/bin/locust -f "$locustfile" --headless --users "$users" --spawn-rate "$spawn_rate" \
    --run-time "${duration_s}s" --stop-timeout 5 --host "$host" \
    --csv "$out/stats" --html "$out/report.html" --only-summary "$@" 2>&1 | tee "$out/locust.log"
code=${PIPESTATUS[0]}
set -e
echo "loadtest: exit code $code; reports: $out/report.html, $out/stats_stats.csv" >&2
exit "$code"
