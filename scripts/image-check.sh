#!/usr/bin/env bash
# scripts/image-check.sh (`make image-check`): build the container image offline and run it for
# real, on a machine that can reach Debian's mirror and PyPI but not Docker Hub.
#
#   1. tools: docker.io (dockerd), mmdebstrap and docker-compose from apt-get when missing (as
#      root); dockerd started in the background when it is not running (and left running);
#   2. bases: a Debian image of this machine's release made by mmdebstrap from Debian packages
#      (python3, python3-venv, ca-certificates, passwd), and one with postgresql-15 and
#      redis-server for the Compose stand-ins; each made once and reused (--rebuild-base);
#   3. wheels: the project's wheel and its pinned runtime dependencies, built on the host by
#      `pip wheel -c constraints.txt .` with this machine's Debian python3 (the interpreter the
#      image runs, so dependency markers resolve alike) into deploy/offline/wheels/;
#   4. images: deploy/Dockerfile's production and dev targets with INSTALL_FROM=wheels and the
#      Debian base (nothing downloaded), and the Postgres/Redis stand-ins
#      (deploy/offline/Dockerfile.services);
#   5. checks, each a row of the results table: the wallet container on the host network
#      against the local Postgres (database wallet_image_check) and Redis (db 14) on free
#      non-default ports: migrate, HEALTHCHECK healthy, non-root, metrics, demo, SIGTERM drain
#      under load, JSON logs, ledger check; no simulator in production, one in dev; then
#      deploy/docker-compose.yml with these images (Postgres and Redis replaced by the
#      stand-ins) and `make run`'s demo sessions against it.
#
# Prints | check | result | detail | and exits 1 if any check failed, 2 if it cannot start.
# Usage: scripts/image-check.sh [--rebuild-base] [--keep]
#   --rebuild-base  make the mmdebstrap bases again (security updates), even if they exist
#   --keep          leave the wallet container and the Compose stack up for inspection
# Logs: .run/image-check/ (builds, container logs). Every wait and command is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

REBUILD_BASE=0 KEEP=0
for arg in "$@"; do
  case "$arg" in
    --rebuild-base) REBUILD_BASE=1 ;;
    --keep) KEEP=1 ;;
    *) sed -n 's/^# Usage: //p' "$0" >&2; exit 2 ;;
  esac
done

# ------------------------------------------------------------------------------ settings

# The bases follow this machine's Debian release and mirrors, so the wheels built here with
# its python3 match the image's interpreter exactly.
SUITE="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
MIRROR="${IMAGE_CHECK_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${IMAGE_CHECK_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
BASE_IMAGE="wallet-platform-base:$SUITE"
SERVICES_BASE_IMAGE="wallet-platform-services-base:$SUITE"
IMAGE="wallet-platform:offline"
DEV_IMAGE="wallet-platform-dev:offline"
PG_IMAGE="wallet-platform-postgres:offline"
REDIS_IMAGE="wallet-platform-redis:offline"
HOST_PY=/usr/bin/python3
WHEELS=deploy/offline/wheels
LOGS=.run/image-check
WHEEL_VENV="$LOGS/wheel-venv"
NAME=wallet-image-check             # container names and the Compose project
DB_NAME=wallet_image_check
REDIS_DB=14                         # not 0: the development runs' and the tests' Redis db
SHUTDOWN_GRACE_MS=10000             # the wallet's drain budget in the checks
STOP_TIMEOUT_S=30                   # docker stop's SIGKILL deadline (Compose uses 30 s too)
HEALTHY_WAIT_S=60                   # HEALTHCHECK: 10 s interval, 30 s start period
LOAD_WORKERS=16                     # concurrent callers while the wallet drains
LOAD_SECONDS_MAX=40                 # the load generator gives up after this long
BASE_TIMEOUT_S=900 BUILD_TIMEOUT_S=900 WHEEL_TIMEOUT_S=900 COMPOSE_UP_TIMEOUT_S=420

mkdir -p "$LOGS"
exec 9>"$LOGS/lock"
flock -w 5 9 || { echo "image-check: another run holds $LOGS/lock" >&2; exit 2; }

log() { printf 'image-check: %s\n' "$*" >&2; }
die() { printf 'image-check: ERROR: %s\n' "$*" >&2; exit 2; }

ROWS=()
FAILED=0
# record <check> <pass|FAIL> <detail>
record() {
  ROWS+=("| $1 | $2 | ${3//|/\\|} |")
  [[ "$2" == pass ]] || FAILED=$((FAILED + 1))
  log "$1: $2 ($3)"
}
PRINTED=0
print_table() {
  PRINTED=1
  echo "| check | result | detail |"
  echo "|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "$(( ${#ROWS[@]} - FAILED )) of ${#ROWS[@]} checks passed in $SECONDS s;" \
       "$(nproc) cores; logs in $LOGS/."
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/wallet-image-check.XXXXXX")"
COMPOSE=()
cleanup() {
  local status=$?
  # A step that stopped the script (set -e) still leaves the rows gathered so far.
  if [[ "$PRINTED" == 0 && ${#ROWS[@]} -gt 0 ]]; then
    record "script" FAIL "stopped early with status $status (see above)"
    print_table
  fi
  if [[ "$KEEP" == 0 ]]; then
    docker rm -f "$NAME-wallet" "$NAME-load" >/dev/null 2>&1 || true
    if [[ ${#COMPOSE[@]} -gt 0 ]]; then
      timeout 180 "${COMPOSE[@]}" down -v --remove-orphans >>"$LOGS/compose.log" 2>&1 || true
    fi
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT

# ------------------------------------------------------------------------------ tools

if ! [[ "$SUITE" =~ ^[a-z]+$ ]] || ! grep -q '^ID=debian' /etc/os-release; then
  die "needs a Debian host (mmdebstrap makes the base from this machine's release)"
fi

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null \
  || need+=(docker-compose)
"$HOST_PY" -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
command -v psql >/dev/null || need+=(postgresql-client)
if [[ ${#need[@]} -gt 0 ]]; then
  [[ $(id -u) == 0 ]] || die "needs ${need[*]} (apt-get install ${need[*]}, as root)"
  log "installing ${need[*]} with apt-get"
  timeout 600 apt-get update -qq </dev/null >&2
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "${need[@]}" </dev/null >&2
fi

if ! timeout 20 docker info >/dev/null 2>&1; then
  [[ $(id -u) == 0 ]] || die "the Docker daemon is not running (start dockerd as root)"
  log "starting dockerd in the background (log: $LOGS/dockerd.log); it keeps running"
  # 9>&-: the daemon must not hold this script's lock.
  nohup setsid dockerd >>"$LOGS/dockerd.log" 2>&1 </dev/null 9>&- &
  for _ in $(seq 1 60); do timeout 5 docker info >/dev/null 2>&1 && break; sleep 1; done
  timeout 20 docker info >/dev/null 2>&1 || die "dockerd did not answer within 60 s ($LOGS/dockerd.log)"
fi

# BuildKit is needed (RUN --mount, skipped stages). Without the buildx plugin a Docker CLI
# older than 23 (Debian's docker.io) still has BuildKit built in; a newer one does not.
BUILD=()
if docker buildx version >/dev/null 2>&1; then
  BUILD=(docker buildx build --load)
else
  for cli in docker /usr/bin/docker; do
    version="$("$cli" version --format '{{.Client.Version}}' 2>/dev/null)" || continue
    if [[ "${version%%.*}" =~ ^[0-9]+$ && "${version%%.*}" -lt 23 ]]; then
      BUILD=(env DOCKER_BUILDKIT=1 "$cli" build)
      break
    fi
  done
fi
[[ ${#BUILD[@]} -gt 0 ]] || die "no BuildKit: install the buildx plugin, or Debian's docker.io CLI"

# ------------------------------------------------------------------------------ bases

# make_base <image> <packages>: a Debian rootfs of this release from mmdebstrap, imported as an
# image. Documentation, man pages and translations are left out; apt's lists are not kept.
make_base() {
  local image=$1 packages=$2
  if [[ "$REBUILD_BASE" == 0 ]] && docker image inspect "$image" >/dev/null 2>&1; then
    log "$image exists (--rebuild-base makes it again)"
    return 0
  fi
  log "making $image with mmdebstrap ($packages; log: $LOGS/mmdebstrap-${image%%:*}.log)"
  timeout "$BASE_TIMEOUT_S" mmdebstrap --variant=apt --include="$packages" \
      --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      "$SUITE" - "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
      "deb $SECURITY_MIRROR $SUITE-security main" 2>"$LOGS/mmdebstrap-${image%%:*}.log" \
    | timeout "$BASE_TIMEOUT_S" docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change "LABEL org.opencontainers.image.description=\"Debian $SUITE made by mmdebstrap for scripts/image-check.sh\"" \
      --change 'CMD ["bash"]' - "$image" >/dev/null
}

started=$SECONDS
if make_base "$BASE_IMAGE" python3,python3-venv,ca-certificates,passwd \
   && make_base "$SERVICES_BASE_IMAGE" postgresql-15,redis-server; then
  record "bases (mmdebstrap)" pass "$BASE_IMAGE, $SERVICES_BASE_IMAGE; $((SECONDS - started)) s"
else
  record "bases (mmdebstrap)" FAIL "see $LOGS/mmdebstrap-*.log"
  print_table; exit 1
fi

# ------------------------------------------------------------------------------ wheels

started=$SECONDS
image_py="$(timeout 60 docker run --rm "$BASE_IMAGE" python3 -c 'import platform; print(platform.python_version())')"
host_py="$("$HOST_PY" -c 'import platform; print(platform.python_version())')"
[[ "$image_py" == "$host_py" ]] || die "the base's Python is $image_py, this host's $HOST_PY is \
$host_py: the wheels' dependency markers (python_full_version) would resolve differently"
[[ -x "$WHEEL_VENV/bin/pip" ]] || "$HOST_PY" -m venv "$WHEEL_VENV"
mkdir -p "$WHEELS"
rm -f "$WHEELS"/wallet_platform-*.whl
if timeout "$WHEEL_TIMEOUT_S" "$WHEEL_VENV/bin/pip" wheel -q --disable-pip-version-check \
     -c constraints.txt --wheel-dir "$WHEELS" . >"$LOGS/wheels.log" 2>&1; then
  record "wheels (host pip wheel)" pass "$(find "$WHEELS" -name '*.whl' | wc -l) wheels, \
$(du -sh "$WHEELS" | cut -f1), Python $host_py; $((SECONDS - started)) s"
else
  record "wheels (host pip wheel)" FAIL "see $LOGS/wheels.log"
  print_table; exit 1
fi

# ------------------------------------------------------------------------------ images

# The Dockerfile's `# syntax=docker/dockerfile:1` line makes BuildKit fetch that frontend from
# Docker Hub; offline the Dockerfile is fed without it to the frontend built into the engine,
# which supports every instruction it uses.
sed '1{/^# syntax=/d}' deploy/Dockerfile >"$WORK/Dockerfile"
build() {  # build <log name> <args...>
  timeout "$BUILD_TIMEOUT_S" "${BUILD[@]}" --progress=plain "${@:2}" >"$LOGS/build-$1.log" 2>&1
}
started=$SECONDS
offline=(-f - --build-arg PYTHON_IMAGE="$BASE_IMAGE" --build-arg INSTALL_FROM=wheels)
if build production "${offline[@]}" --target production -t "$IMAGE" . <"$WORK/Dockerfile" \
   && build dev "${offline[@]}" --target dev -t "$DEV_IMAGE" . <"$WORK/Dockerfile" \
   && build postgres -f deploy/offline/Dockerfile.services --target postgres \
        --build-arg SERVICES_BASE="$SERVICES_BASE_IMAGE" -t "$PG_IMAGE" deploy/offline \
   && build redis -f deploy/offline/Dockerfile.services --target redis \
        --build-arg SERVICES_BASE="$SERVICES_BASE_IMAGE" -t "$REDIS_IMAGE" deploy/offline; then
  size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%d MB", $1 / 1e6}'; }
  record "images (offline build)" pass "$IMAGE $(size "$IMAGE"), $DEV_IMAGE $(size "$DEV_IMAGE"), \
stand-ins $PG_IMAGE, $REDIS_IMAGE; $((SECONDS - started)) s"
else
  record "images (offline build)" FAIL "see $LOGS/build-*.log"
  print_table; exit 1
fi

# ------------------------------------------------------------------------------ the wallet container

# A port nothing listens on, in 20000-31999 (below Linux's ephemeral range). Checked, never
# bound here: binding and closing to find a port would race with the container just the same.
PICKED=()
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    [[ " ${PICKED[*]-} " == *" $p "* ]] && continue
    if [[ -z "$(ss -Htln "sport = :$p" 2>/dev/null)" ]] \
       && ! timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" 2>/dev/null; then
      PICKED+=("$p"); echo "$p"; return 0
    fi
  done
  die "no free port found"
}

# The local Postgres and Redis as the tests use them (scripts/services.sh: the shared servers
# on 5432/6379, or private ones), with a database and a Redis db of this check's own; an
# inherited DATABASE_URL/REDIS_URL is set aside, since it names another database.
eval "$(env -u DATABASE_URL -u REDIS_URL WALLET_DB_NAME="$DB_NAME" scripts/services.sh ensure)"
REDIS_URL="${REDIS_URL%/*}/$REDIS_DB"
hex() { head -c "$1" /dev/urandom | od -An -v -tx1 | tr -d ' \n'; }
CALLERS="{\"game-service\": {\"token\": \"$(hex 24)\", \"scopes\": [\"game\", \"read\"]},
 \"bonus-service\": {\"token\": \"$(hex 24)\", \"scopes\": [\"bonus\", \"read\"]},
 \"payments-service\": {\"token\": \"$(hex 24)\", \"scopes\": [\"payments\", \"read\", \"compliance\"]},
 \"support\": {\"token\": \"$(hex 24)\", \"scopes\": [\"support\", \"read\"]}}"
WALLET_PORT="$(free_port)"
METRICS_PORT="$(free_port)"
WALLET_ADDR="127.0.0.1:$WALLET_PORT"
on_host=(--network host -e DATABASE_URL -e REDIS_URL)
export DATABASE_URL REDIS_URL

docker rm -f "$NAME-wallet" "$NAME-load" >/dev/null 2>&1 || true
if timeout 120 docker run --rm "${on_host[@]}" "$IMAGE" wallet-core migrate \
     >"$LOGS/migrate.log" 2>&1; then
  record "migrate (image)" pass "wallet-core migrate on database $DB_NAME"
else
  record "migrate (image)" FAIL "see $LOGS/migrate.log"
fi

# Locked down as Compose and Kubernetes run it: read-only root, /tmp only, no capabilities.
timeout 60 docker run -d --name "$NAME-wallet" "${on_host[@]}" \
  --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
  -e WALLET_CALLERS="$CALLERS" -e WALLET_LISTEN_ADDR="$WALLET_ADDR" \
  -e WALLET_METRICS_ADDR="127.0.0.1:$METRICS_PORT" -e WALLET_SHUTDOWN_GRACE_MS="$SHUTDOWN_GRACE_MS" \
  "$IMAGE" >/dev/null

started=$SECONDS
health=starting
while (( SECONDS - started < HEALTHY_WAIT_S )); do
  health="$(docker inspect -f '{{.State.Health.Status}}' "$NAME-wallet" 2>/dev/null || echo gone)"
  [[ "$health" == starting ]] || break
  sleep 1
done
if [[ "$health" == healthy ]]; then
  record "HEALTHCHECK" pass "healthy after $((SECONDS - started)) s (wallet on $WALLET_ADDR)"
else
  record "HEALTHCHECK" FAIL "$health after $((SECONDS - started)) s: \
$(docker inspect -f '{{range .State.Health.Log}}{{.Output}}{{end}}' "$NAME-wallet" 2>&1 | tail -c 300)"
fi

pid="$(docker inspect -f '{{.State.Pid}}' "$NAME-wallet" 2>/dev/null || echo 0)"
uid="$(awk '/^Uid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo '?')"
exec_uid="$(timeout 30 docker exec "$NAME-wallet" id -u 2>/dev/null || echo '?')"
if [[ "$uid" =~ ^[0-9]+$ && "$uid" != 0 && "$exec_uid" == "$uid" ]]; then
  record "non-root" pass "PID 1 runs as uid $uid; docker exec id -u: $exec_uid"
else
  record "non-root" FAIL "PID 1 uid $uid; docker exec id -u: $exec_uid"
fi

if metrics="$(timeout 10 "$HOST_PY" -c 'import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
     "http://127.0.0.1:$METRICS_PORT/metrics" 2>&1)" && grep -q '^wallet_' <<<"$metrics"; then
  record "metrics" pass "$(grep -c '^wallet_' <<<"$metrics") wallet_ samples on :$METRICS_PORT"
else
  record "metrics" FAIL "$(tail -c 200 <<<"$metrics")"
fi

if timeout 120 docker run --rm --network host -e WALLET_CALLERS="$CALLERS" "$IMAGE" \
     wallet-core demo --target "$WALLET_ADDR" >"$LOGS/wallet-demo.log" 2>&1; then
  record "wallet demo (image)" pass "$(grep -c . "$LOGS/wallet-demo.log") lines; $LOGS/wallet-demo.log"
else
  record "wallet demo (image)" FAIL "see $LOGS/wallet-demo.log"
fi

# SIGTERM under load: LOAD_WORKERS callers deposit in a loop from a second container of the
# image; `docker stop` sends SIGTERM while calls are in flight. The wallet must finish within
# its grace and exit 0, log the drain, and every call must end cleanly: OK, or refused without
# effect. gRPC refuses calls that arrive during shutdown with UNAVAILABLE, or with CANCELLED
# when the server had accepted the stream but not yet started the handler; both mean "not
# done, retry with the same key". So the journal must hold exactly the deposits that were
# answered OK: none lost, none executed without an answer.
LOADER='
import asyncio, collections, json, os, sys, time
import grpc, orjson
from wallet.v1 import wallet_service_pb2 as pb, wallet_service_pb2_grpc as pb_grpc

target, workers, seconds_max, prefix = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
callers = orjson.loads(os.environ["WALLET_CALLERS"])
token = next(c["token"] for c in callers.values() if "payments" in c["scopes"])
md = [("authorization", f"Bearer {token}")]
codes = collections.Counter()

async def worker(stub, n):
    player = f"{prefix}-{n}"
    await stub.OpenWallet(pb.OpenWalletRequest(player_id=player, currency="USD",
                          idempotency_key=f"{player}-open"), metadata=md, timeout=5)
    deadline, i, refused = time.monotonic() + seconds_max, 0, 0
    while time.monotonic() < deadline and refused < 3:
        i += 1
        try:
            await stub.Deposit(pb.DepositRequest(player_id=player, currency="USD", amount=100,
                               psp="stripe", psp_reference=f"pi_{player}_{i}",
                               idempotency_key=f"{player}-{i}"), metadata=md, timeout=5)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
            refused += exc.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(0.1)

async def main():
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.WalletServiceStub(channel)
        await asyncio.gather(*(worker(stub, n) for n in range(workers)))
    print(json.dumps(codes))

asyncio.run(main())
'
load_prefix="drain-$(hex 4)"
timeout 60 docker run -d --name "$NAME-load" --network host -e WALLET_CALLERS="$CALLERS" "$IMAGE" \
  python -c "$LOADER" "$WALLET_ADDR" "$LOAD_WORKERS" "$LOAD_SECONDS_MAX" "$load_prefix" >/dev/null
sleep 3   # the load is running: wallets opened, deposits flowing
stop_started_ms=$(date +%s%3N)
timeout $((STOP_TIMEOUT_S + 30)) docker stop -t "$STOP_TIMEOUT_S" "$NAME-wallet" >/dev/null || true
stop_ms=$(( $(date +%s%3N) - stop_started_ms ))
timeout $((LOAD_SECONDS_MAX + 30)) docker wait "$NAME-load" >/dev/null || true
load="$(docker logs "$NAME-load" 2>&1 | tail -n 1)"
docker logs "$NAME-load" >"$LOGS/load.log" 2>&1 || true
exit_code="$(docker inspect -f '{{.State.ExitCode}}' "$NAME-wallet")"
docker logs "$NAME-wallet" >"$LOGS/wallet.stdout.log" 2>"$LOGS/wallet.stderr.log" || true
drain_lines="$(cat "$LOGS/wallet.stdout.log" "$LOGS/wallet.stderr.log" \
  | grep -cE '"(message|msg)": ?"(shutting down|stopped)"' || true)"
# Calls the wallet answered between SIGTERM and "stopped": the in-flight ones it drained.
drained="$(sed -n '/"msg":"shutting down"/,$p' "$LOGS/wallet.stdout.log" | grep -c '"msg":"rpc"' || true)"
load_verdict="$("$HOST_PY" -c 'import json, sys
try:
    codes = json.loads(sys.argv[1])
except ValueError:
    sys.exit("no load summary")
odd = set(codes) - {"OK", "UNAVAILABLE", "CANCELLED"}
sys.exit(f"unexpected codes {sorted(odd)}" if odd else None if codes.get("OK") else "no call succeeded")
' "$load" 2>&1)" && load_ok=1 || load_ok=0
answered="$("$HOST_PY" -c 'import json, sys; print(json.loads(sys.argv[1]).get("OK", 0))' \
  "$load" 2>/dev/null || echo '?')"
recorded="$(timeout 30 psql -w "$DATABASE_URL" -tAc "SELECT count(*) FROM wallet.journal
  WHERE idempotency_key LIKE '$load_prefix-%' AND idempotency_key NOT LIKE '%-open'" 2>&1)" \
  || recorded="? ($recorded)"
if [[ "$exit_code" == 0 && "$stop_ms" -le "$SHUTDOWN_GRACE_MS" && "$drain_lines" -ge 2 \
      && "$load_ok" == 1 && "$recorded" == "$answered" ]]; then
  record "SIGTERM drain" pass "exit 0, docker stop took $stop_ms ms (grace $SHUTDOWN_GRACE_MS ms); \
$drained calls answered after 'shutting down', then 'stopped'; load $load; the journal holds \
exactly the $recorded deposits answered OK"
else
  record "SIGTERM drain" FAIL "exit $exit_code, docker stop took $stop_ms ms (grace \
$SHUTDOWN_GRACE_MS ms); drain lines $drain_lines/2; load ${load:-none} $load_verdict; journal \
$recorded deposits, answered OK $answered"
fi

if json_verdict="$("$HOST_PY" - "$LOGS/wallet.stdout.log" "$LOGS/wallet.stderr.log" <<'PY' 2>&1
import json, sys
counts, bad = {}, []
for stream, path in zip(("stdout", "stderr"), sys.argv[1:]):
    lines = [l for l in open(path, encoding="utf-8").read().splitlines() if l.strip()]
    counts[stream] = len(lines)
    for line in lines:
        try:
            assert isinstance(json.loads(line), dict)
        except (ValueError, AssertionError):
            bad.append(f"{stream}: {line[:80]}")
if bad or not counts["stdout"]:
    sys.exit(f"{len(bad)} lines not JSON objects, e.g. {bad[:1]}" if bad
             else "no log lines on stdout")
print(f"all {sum(counts.values())} lines are JSON objects (stdout {counts['stdout']}, "
      f"stderr {counts['stderr']})")
PY
)"; then
  record "JSON logs" pass "$json_verdict"
else
  record "JSON logs" FAIL "$json_verdict"
fi

if timeout 120 docker run --rm --network host -e DATABASE_URL "$IMAGE" wallet-core check \
     >"$LOGS/ledger-check.log" 2>&1; then
  record "ledger check after drain" pass "wallet-core check: $(tail -n 1 "$LOGS/ledger-check.log" | cut -c1-100)"
else
  record "ledger check after drain" FAIL "see $LOGS/ledger-check.log"
fi

# The production image has no PSP simulator (simulate-psp exits 2); the dev image has it.
has_sim='import importlib.util as u, sys; sys.exit(0 if u.find_spec("psp_simulator") else 3)'
prod_sim=0; timeout 60 docker run --rm "$IMAGE" python -c "$has_sim" >/dev/null 2>&1 || prod_sim=$?
prod_cmd=0; timeout 60 docker run --rm "$IMAGE" gateway-bridge simulate-psp >/dev/null 2>&1 || prod_cmd=$?
dev_sim=0; timeout 60 docker run --rm "$DEV_IMAGE" python -c "$has_sim" >/dev/null 2>&1 || dev_sim=$?
if [[ "$prod_sim" == 3 && "$prod_cmd" == 2 ]]; then
  record "production: no simulator" pass "psp_simulator not importable; simulate-psp exits 2"
else
  record "production: no simulator" FAIL "find_spec exit $prod_sim (3 = absent); simulate-psp exit $prod_cmd"
fi
if [[ "$dev_sim" == 0 ]]; then
  record "dev: simulator" pass "psp_simulator importable in $DEV_IMAGE"
else
  record "dev: simulator" FAIL "find_spec exit $dev_sim in $DEV_IMAGE"
fi
[[ "$KEEP" == 1 ]] || docker rm -f "$NAME-wallet" "$NAME-load" >/dev/null 2>&1 || true

# ------------------------------------------------------------------------------ Compose

# deploy/docker-compose.yml as it is, with an override (deploy/offline/docker-compose.offline.yml)
# that swaps postgres:15 and redis:7 for the stand-ins; our services take the offline images
# through WALLET_PLATFORM_IMAGE / WALLET_PLATFORM_DEV_IMAGE. Debian's docker-compose is
# Compose v1: it predates the top-level `name:` (the project name is given with -p instead)
# and runs `deploy.replicas` only with --compatibility.
compose_file=deploy/docker-compose.yml
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  COMPOSE=(docker-compose --compatibility)
  sed '/^name:/d' deploy/docker-compose.yml >"$WORK/docker-compose.yml"
  compose_file="$WORK/docker-compose.yml"
fi
COMPOSE+=(--project-directory deploy -p "$NAME" -f "$compose_file"
          -f deploy/offline/docker-compose.offline.yml)
export WALLET_PLATFORM_IMAGE="$IMAGE" WALLET_PLATFORM_DEV_IMAGE="$DEV_IMAGE" \
       WALLET_POSTGRES_IMAGE="$PG_IMAGE" WALLET_REDIS_IMAGE="$REDIS_IMAGE"
deploy/make-dev-secrets.sh >"$LOGS/secrets.log" 2>&1
timeout 180 "${COMPOSE[@]}" down -v --remove-orphans >"$LOGS/compose.log" 2>&1 || true

busy=()
for p in 8080 8090; do [[ -z "$(ss -Htln "sport = :$p")" ]] || busy+=("$p"); done
started=$SECONDS
if [[ ${#busy[@]} -gt 0 ]]; then
  record "compose up" FAIL "127.0.0.1 port(s) ${busy[*]} in use (the stack publishes them; make stop?)"
elif ! timeout "$COMPOSE_UP_TIMEOUT_S" "${COMPOSE[@]}" up -d --no-build bridge \
       >>"$LOGS/compose.log" 2>&1; then
  record "compose up" FAIL "see $LOGS/compose.log"
else
  # `up` returns once the bridge started; wait for its own health check.
  bridge_health=starting
  while (( SECONDS - started < COMPOSE_UP_TIMEOUT_S )); do
    bridge_health="$(docker inspect -f '{{.State.Health.Status}}' \
      "$("${COMPOSE[@]}" ps -q bridge)" 2>/dev/null || echo gone)"
    [[ "$bridge_health" == starting ]] || break
    sleep 2
  done
  wallets=0 healthy=0
  for id in $("${COMPOSE[@]}" ps -q wallet); do
    wallets=$((wallets + 1))
    [[ "$(docker inspect -f '{{.State.Health.Status}}' "$id")" == healthy ]] && healthy=$((healthy + 1))
  done
  if [[ "$bridge_health" == healthy && "$wallets" == 2 && "$healthy" == 2 ]]; then
    record "compose up" pass "postgres, redis, migrate, 2 wallets, simulator, bridge healthy \
in $((SECONDS - started)) s (${COMPOSE[0]})"
  else
    record "compose up" FAIL "bridge $bridge_health, wallets healthy $healthy/$wallets; see $LOGS/compose.log"
  fi
  # `make run`'s sessions, as deploy/README.md runs them against the stack.
  demo() {  # demo <check> <log> <compose args...>
    if timeout 180 "${COMPOSE[@]}" "${@:3}" >"$LOGS/$2.log" 2>&1; then
      record "$1" pass "$(grep -c . "$LOGS/$2.log") lines; $LOGS/$2.log"
    else
      record "$1" FAIL "see $LOGS/$2.log"
    fi
  }
  demo "compose: wallet demo" compose-wallet-demo \
    exec -T wallet wallet-core demo --target wallet:50051
  demo "compose: bridge demo" compose-bridge-demo \
    exec -T bridge gateway-bridge demo --bridge-url http://127.0.0.1:8080 \
    --sim-url http://simulator:8090 --wallet-addr wallet:50051
  demo "compose: ledger check" compose-check run --rm --no-deps -T migrate wallet-core check
  demo "compose: walletctl incidents" compose-incidents exec -T bridge walletctl incidents list
fi
timeout 60 "${COMPOSE[@]}" logs --no-color >"$LOGS/compose-services.log" 2>&1 || true

print_table
[[ "$FAILED" == 0 ]]
