#!/usr/bin/env bash
# Command (1) of the README: set up and run the system, then show it working.
# Environment, Postgres and Redis (reused or started privately), migrations, then the wallet,
# the PSP simulator and the gateway bridge in the background (logs in .run/*.log), then
# scripted demo sessions: wallet calls, and deposits/withdrawals through the simulator.
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
    # The bridge; compliance: the restrictions its KYC results call for.
    "payments-service": ["payments", "read", "compliance"], "support": ["support", "read"],
    # The casino's account service: the player's responsible-gambling limits and breaks.
    "account-service": ["limits", "read"]}.items()}
fd = os.open(".run/callers.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(callers, f, indent=1)
PY
fi
export WALLET_CALLERS_FILE="$PWD/.run/callers.json"
export WALLET_LISTEN_ADDR="${WALLET_LISTEN_ADDR:-127.0.0.1:50051}"
export WALLET_METRICS_ADDR="${WALLET_METRICS_ADDR:-127.0.0.1:9101}"

# Development secrets for the bridge and the PSP simulator, created once (0600); production
# passes its own through the environment or *_FILE variables.
if [ ! -f .run/bridge.env ]; then
    .venv/bin/python - <<'PY'
import json, os, secrets
def private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
callers = json.load(open(".run/callers.json"))
private(".run/bridge-wallet-token", callers["payments-service"]["token"])
private(".run/bridge-api-keys.json", json.dumps({"cashier": secrets.token_urlsafe(24)}))
env = {
    "BRIDGE_STRIPE_API_KEY": "sk_test_" + secrets.token_hex(12),
    "BRIDGE_STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(16),
    "BRIDGE_ADYEN_API_KEY": "AQE" + secrets.token_hex(16),
    "BRIDGE_ADYEN_HMAC_KEY": secrets.token_hex(32).upper(),
    "BRIDGE_ADYEN_MERCHANT_ACCOUNT": "DemoCasinoECOM",
    "BRIDGE_NOWPAYMENTS_API_KEY": secrets.token_hex(16),
    "BRIDGE_NOWPAYMENTS_IPN_SECRET": secrets.token_hex(16),
}
private(".run/bridge.env", "".join(f"export {k}='{v}'\n" for k, v in env.items()))
PY
fi
# walletctl's read-only view of the wallet (`walletctl player`) uses the support caller.
if [ ! -f .run/support-wallet-token ]; then
    .venv/bin/python - <<'PY'
import json, os
fd = os.open(".run/support-wallet-token", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w") as f:
    f.write(json.load(open(".run/callers.json"))["support"]["token"])
PY
fi
# shellcheck disable=SC1091
source .run/bridge.env
export BRIDGE_LISTEN_ADDR="${BRIDGE_LISTEN_ADDR:-127.0.0.1:8080}"
export BRIDGE_METRICS_ADDR="${BRIDGE_METRICS_ADDR:-127.0.0.1:9102}"
export SIM_LISTEN_ADDR="${SIM_LISTEN_ADDR:-127.0.0.1:8090}"
export BRIDGE_PUBLIC_URL="http://$BRIDGE_LISTEN_ADDR" SIM_WEBHOOK_BASE_URL="http://$BRIDGE_LISTEN_ADDR"
export BRIDGE_STRIPE_BASE_URL="http://$SIM_LISTEN_ADDR/stripe"
export BRIDGE_ADYEN_BASE_URL="http://$SIM_LISTEN_ADDR/adyen"
export BRIDGE_NOWPAYMENTS_BASE_URL="http://$SIM_LISTEN_ADDR/nowpayments"
# Currency conversion (docs/FX.md): rates from the simulator's provider endpoint.
export BRIDGE_FX_RATES_URL="${BRIDGE_FX_RATES_URL:-http://$SIM_LISTEN_ADDR/fx/rates}"
export BRIDGE_FX_SPREAD_BPS="${BRIDGE_FX_SPREAD_BPS:-150}"
export BRIDGE_FX_RATE_AGE_MAX_MS="${BRIDGE_FX_RATE_AGE_MAX_MS:-60000}"
export BRIDGE_FX_TIMEOUT_MS="${BRIDGE_FX_TIMEOUT_MS:-2000}"
export BRIDGE_WALLET_ADDR="$WALLET_LISTEN_ADDR"
export BRIDGE_WALLET_TOKEN_FILE="$PWD/.run/bridge-wallet-token"
export BRIDGE_API_KEYS_FILE="$PWD/.run/bridge-api-keys.json"

.venv/bin/wallet-core migrate
.venv/bin/gateway-bridge migrate
scripts/stop.sh >/dev/null 2>&1 || true

# start <name> <log> <command...>: background process with a pid file under .run/.
start() {
    local name=$1; shift
    nohup "$@" >> ".run/$name.log" 2>&1 &
    echo $! > ".run/$name.pid"
}
# wait_for <name> <check command...>: up to 10 s, failing early if the process died.
wait_for() {
    local name=$1; shift
    for _ in $(seq 1 50); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        kill -0 "$(cat ".run/$name.pid")" 2>/dev/null || { tail -20 ".run/$name.log"; exit 1; }
        sleep 0.2
    done
    echo "$name did not become ready; see .run/$name.log" >&2
    exit 1
}
wallet_healthy() { .venv/bin/wallet-core health --addr "$WALLET_LISTEN_ADDR" >/dev/null 2>&1; }
http_ok() { .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=0.5)" "$1"; }

start wallet .venv/bin/wallet-core serve
wait_for wallet wallet_healthy
echo "wallet-core is serving on $WALLET_LISTEN_ADDR (pid $(cat .run/wallet.pid), logs .run/wallet.log, metrics http://$WALLET_METRICS_ADDR/metrics)"
start simulator .venv/bin/gateway-bridge simulate-psp
wait_for simulator http_ok "http://$SIM_LISTEN_ADDR/_sim/knobs"
echo "PSP simulator is serving on $SIM_LISTEN_ADDR (logs .run/simulator.log)"
start bridge .venv/bin/gateway-bridge serve
wait_for bridge http_ok "http://$BRIDGE_LISTEN_ADDR/readyz"
echo "gateway-bridge is serving on $BRIDGE_LISTEN_ADDR (logs .run/bridge.log, metrics http://$BRIDGE_METRICS_ADDR/metrics)"

.venv/bin/wallet-core demo --target "$WALLET_LISTEN_ADDR"
.venv/bin/gateway-bridge demo --bridge-url "http://$BRIDGE_LISTEN_ADDR" \
    --sim-url "http://$SIM_LISTEN_ADDR" --wallet-addr "$WALLET_LISTEN_ADDR"
.venv/bin/wallet-core check
echo
echo "Incidents the bridge's detector sees now (walletctl incidents list):"
.venv/bin/walletctl incidents list
cat <<MSG
The wallet, the bridge and the PSP simulator keep running; stop them with: make stop
  cashier API:  http://$BRIDGE_LISTEN_ADDR/v1/... with the key in .run/bridge-api-keys.json
  support:      export DATABASE_URL='$DATABASE_URL' WALLETCTL_WALLET_ADDR='$WALLET_LISTEN_ADDR'
                export WALLETCTL_WALLET_TOKEN_FILE='$PWD/.run/support-wallet-token'
                .venv/bin/walletctl incidents list | player PLAYER | payment find REF  (docs/INCIDENTS.md)
MSG
