#!/usr/bin/env bash
# Generate the development secrets deploy/docker-compose.yml reads, into deploy/secrets/.
#
# Random values, created once: a file that already exists is kept, so running this again is
# harmless and never rotates a secret under a running stack (Postgres applies its password
# only when it initialises its volume). To start over: `docker compose -f
# deploy/docker-compose.yml down -v` and delete deploy/secrets/* except README.md.
#
# These are for a laptop or a CI stack talking to the PSP simulator. Production secrets come
# from the operator's secret store (see deploy/secrets/README.md, deploy/k8s/README.md).
#
# Needs only bash and coreutils (head, od, tr): no Python, no openssl.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
# The directory is the host-side protection: only its owner can list or open what is inside.
chmod 0700 "$dir"

# hex <bytes>: a random lowercase hex string (2 characters per byte) from the kernel CSPRNG.
hex() { head -c "$1" /dev/urandom | od -An -v -tx1 | tr -d ' \n'; }

# put <name> <mode> <content>: write deploy/secrets/<name> unless it exists.
#  0644 for files Compose mounts as secrets: Compose (without Swarm) bind-mounts the host
#  file and ignores the uid/gid/mode of the long syntax, so the container's user (10001 for
#  our image, postgres, grafana) must be able to read it; the 0700 directory keeps other host
#  users out. 0600 for env files: only the compose CLI on the host reads those.
put() {
    local path="$dir/$1"
    if [ -e "$path" ]; then
        echo "kept      $path"
        return 0
    fi
    (umask 077 && printf '%s' "$3" > "$path")
    chmod "$2" "$path"
    echo "generated $path"
}
# read_secret <name>: the content of a secret generated now or by an earlier run.
read_secret() { cat "$dir/$1"; }

# --- Postgres: the password file for the postgres image, and DATABASE_URL for our services
# (DATABASE_URL can only come from the environment, so it goes into an env_file). Hex keeps
# the URL free of characters that would need percent-encoding.
put postgres_password 0644 "$(hex 24)"
put database.env 0600 "DATABASE_URL=postgresql://wallet:$(read_secret postgres_password)@postgres:5432/wallet
"

# --- Wallet callers (WALLET_CALLERS_FILE): one token per calling service with its scopes.
game=$(hex 24) bonus=$(hex 24) payments=$(hex 24) support=$(hex 24) account=$(hex 24)
put wallet_callers.json 0644 "{
  \"game-service\": {\"token\": \"$game\", \"scopes\": [\"game\", \"read\"]},
  \"bonus-service\": {\"token\": \"$bonus\", \"scopes\": [\"bonus\", \"read\"]},
  \"payments-service\": {\"token\": \"$payments\", \"scopes\": [\"payments\", \"read\", \"compliance\"]},
  \"support\": {\"token\": \"$support\", \"scopes\": [\"support\", \"read\"]},
  \"account-service\": {\"token\": \"$account\", \"scopes\": [\"limits\", \"read\"]}
}
"

# --- Bridge: its wallet token is the payments-service caller's token (taken from the callers
# file, which may come from an earlier run), and the cashier clients' API keys.
payments_token=$(sed -n 's/.*"payments-service": {"token": "\([0-9a-f]*\)".*/\1/p' \
    "$dir/wallet_callers.json")
if [ -z "$payments_token" ]; then
    echo "make-dev-secrets: no payments-service token in $dir/wallet_callers.json" >&2
    exit 1
fi
put bridge_wallet_token 0644 "$payments_token"
put bridge_api_keys.json 0644 "{\"cashier\": \"$(hex 24)\"}
"

# --- PSP credentials and webhook secrets, shaped like the real ones. The bridge reads each
# from a file (BRIDGE_*_FILE); the PSP simulator reads the same values from its environment
# only, hence simulator.env below.
put stripe_api_key 0644 "sk_test_$(hex 12)"
put stripe_webhook_secret 0644 "whsec_$(hex 16)"
put adyen_api_key 0644 "AQE$(hex 16)"
# Adyen shows its HMAC key as uppercase hex; the bridge hex-decodes it.
put adyen_hmac_key 0644 "$(hex 32 | tr 'a-f' 'A-F')"
put nowpayments_api_key 0644 "$(hex 16)"
put nowpayments_ipn_secret 0644 "$(hex 16)"
put simulator.env 0600 "BRIDGE_STRIPE_API_KEY=$(read_secret stripe_api_key)
BRIDGE_STRIPE_WEBHOOK_SECRET=$(read_secret stripe_webhook_secret)
BRIDGE_ADYEN_API_KEY=$(read_secret adyen_api_key)
BRIDGE_ADYEN_HMAC_KEY=$(read_secret adyen_hmac_key)
BRIDGE_NOWPAYMENTS_API_KEY=$(read_secret nowpayments_api_key)
BRIDGE_NOWPAYMENTS_IPN_SECRET=$(read_secret nowpayments_ipn_secret)
"

# --- Grafana's admin password (GF_SECURITY_ADMIN_PASSWORD__FILE).
put grafana_admin_password 0644 "$(hex 16)"

echo "Secrets are in $dir. Grafana: admin / \$(cat $dir/grafana_admin_password)"
