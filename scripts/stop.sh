#!/usr/bin/env bash
# Stop the wallet started by scripts/run.sh (SIGTERM: graceful), then private servers if any.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .run/wallet.pid ] && kill -0 "$(cat .run/wallet.pid)" 2>/dev/null; then
    kill -TERM "$(cat .run/wallet.pid)"
    for _ in $(seq 1 75); do kill -0 "$(cat .run/wallet.pid)" 2>/dev/null || break; sleep 0.2; done
    echo "wallet-core stopped"
fi
rm -f .run/wallet.pid
[ "${1:-}" = "--all" ] && scripts/services.sh stop
exit 0
