#!/usr/bin/env bash
# Stop what scripts/run.sh started (SIGTERM: graceful), bridge first, wallet last; then the
# private Postgres/Redis servers if scripts started any (--all).
set -euo pipefail
cd "$(dirname "$0")/.."
for name in bridge simulator wallet; do
    pidfile=".run/$name.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill -TERM "$(cat "$pidfile")"
        for _ in $(seq 1 75); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.2; done
        echo "$name stopped"
    fi
    rm -f "$pidfile"
done
[ "${1:-}" = "--all" ] && scripts/services.sh stop
exit 0
