#!/usr/bin/env bash
# Command (1) of the README: set up and run the wallet, then show it working.
# Environment, Postgres and Redis (reused or started privately), migrations, the wallet in
# the background (logs in .run/wallet.log), then a scripted demo session.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
eval "$(scripts/services.sh ensure)"
export DATABASE_URL REDIS_URL
mkdir -p .run

# Development callers with random tokens, created once; production passes its own.
if [ ! -f .run/callers.json ]; then
    .venv/bin/python - <<'PY'
import json, os, secrets
callers = {name: {"token": secrets.token_urlsafe(24), "scopes": scopes} for name, scopes in {
    "game-service": ["game", "read"], "bonus-service": ["bonus", "read"],
    "payments-service": ["payments", "read"], "support": ["support", "read"]}.items()}
fd = os.open(".run/callers.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(callers, f, indent=1)
PY
fi
export WALLET_CALLERS_FILE="$PWD/.run/callers.json"
export WALLET_LISTEN_ADDR="${WALLET_LISTEN_ADDR:-127.0.0.1:50051}"

.venv/bin/wallet-core migrate
scripts/stop.sh >/dev/null 2>&1 || true
nohup .venv/bin/wallet-core serve >> .run/wallet.log 2>&1 &
echo $! > .run/wallet.pid
for _ in $(seq 1 50); do   # up to 10 s for the listener
    if .venv/bin/python -c "
import grpc, sys
from grpc_health.v1 import health_pb2, health_pb2_grpc
ch = grpc.insecure_channel('$WALLET_LISTEN_ADDR')
try:
    r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
    sys.exit(0 if r.status == health_pb2.HealthCheckResponse.SERVING else 1)
except grpc.RpcError:
    sys.exit(1)" 2>/dev/null; then break; fi
    kill -0 "$(cat .run/wallet.pid)" 2>/dev/null || { tail -20 .run/wallet.log; exit 1; }
    sleep 0.2
done
echo "wallet-core is serving on $WALLET_LISTEN_ADDR (pid $(cat .run/wallet.pid), logs .run/wallet.log)"
.venv/bin/wallet-core demo --target "$WALLET_LISTEN_ADDR"
.venv/bin/wallet-core check
cat <<MSG
The wallet keeps running. Try it with grpcurl (see README), then stop it with: make stop
  export DATABASE_URL='$DATABASE_URL' WALLET_CALLERS_FILE='$WALLET_CALLERS_FILE'
MSG
