#!/usr/bin/env bash
# scripts/services.sh: make PostgreSQL and Redis available for the wallet service.
#
# Why this exists: the tests and local runs need a real PostgreSQL and a real
# Redis. Machines differ. Some have shared servers on the default ports, CI may
# give us DATABASE_URL/REDIS_URL, and some have nothing running. This script
# settles that in one place and prints `export` lines, so callers can just do:
#
#     eval "$(scripts/services.sh ensure)"
#
# Usage:
#   scripts/services.sh ensure   # print `export DATABASE_URL=...` and `export REDIS_URL=...`
#   scripts/services.sh status   # show what `ensure` would use (starts nothing)
#   scripts/services.sh stop     # stop the PRIVATE servers started by this script
#
# How each server is chosen, first match wins:
#   1. DATABASE_URL / REDIS_URL already set: use them as they are (after a liveness probe).
#   2. A server answering on 127.0.0.1:5432 / 127.0.0.1:6379: reuse it.
#      Set WALLET_SERVICES_SKIP_DEFAULT=1 to skip this step.
#   3. Otherwise start a PRIVATE server under .run/ in the project root.
#      If binaries are missing, apt-get installs them when we are root or have
#      passwordless sudo. Set WALLET_SERVICES_NO_INSTALL=1 to forbid that.
#
# Knobs: WALLET_DB_NAME (wallet), WALLET_PRIVATE_PG_PORT (55432),
#        WALLET_PRIVATE_REDIS_PORT (56379).
#
# In `ensure` mode stdout carries ONLY the export lines. Everything else goes to
# stderr. On failure nothing is printed on stdout and the exit status is 1.
# Every wait has a time limit. The script never reads stdin.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DB_NAME="${WALLET_DB_NAME:-wallet}"
PG_PORT="${WALLET_PRIVATE_PG_PORT:-55432}"
REDIS_PORT="${WALLET_PRIVATE_REDIS_PORT:-56379}"
SKIP_DEFAULT="${WALLET_SERVICES_SKIP_DEFAULT:-0}"

RUN_DIR="$ROOT/.run"
PG_DIR="$RUN_DIR/pg"          # also the unix-socket directory
PG_DATA="$PG_DIR/data"
PG_LOG="$PG_DIR/server.log"
REDIS_DIR="$RUN_DIR/redis"
REDIS_LOG="$REDIS_DIR/server.log"
REDIS_PIDFILE="$REDIS_DIR/redis.pid"

export PGCONNECT_TIMEOUT=5    # psql/createdb never hang on a dead host

# ---------------------------------------------------------------- helpers ---

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [[ "$(id -u)" == 0 ]]; }

# Hide the password in a URL before it goes to a log line.
redact() { sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#' <<<"$1"; }

# Single-quote a value so the export line is safe to eval in any POSIX shell.
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# Export lines are collected here and written to fd 3 (the real stdout) only
# when everything succeeded, so a failed run prints no exports at all.
#
# NOFDS: every command that leaves a daemon behind runs with `3>&- 9>&-`.
# Otherwise the daemon would keep fd 3 (the caller's `$(...)` pipe, so `eval`
# would hang) and fd 9 (the lock, so the next run would wait for it).
EXPORTS=()
emit_export() { EXPORTS+=("export $1=$(sq "$2")"); }

# Run a command under a time limit when `timeout` exists (it does not on stock macOS).
with_timeout() {
  local secs="$1"; shift
  if have timeout; then timeout "$secs" "$@"; else "$@"; fi
}

# TCP connect probe that works without any client tools.
tcp_open() {
  with_timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

can_install() {
  [[ "${WALLET_SERVICES_NO_INSTALL:-0}" != 1 ]] || return 1
  have apt-get || return 1
  is_root || { have sudo && sudo -n true 2>/dev/null; }
}

apt_install() {
  local sudo=()
  is_root || sudo=(sudo -n)
  log "installing $* with apt-get (set WALLET_SERVICES_NO_INSTALL=1 to forbid)"
  # 3>&- 9>&-: the package may start a daemon, which must not inherit our fds (see NOFDS).
  "${sudo[@]}" apt-get update -qq </dev/null >&2 3>&- 9>&-
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" </dev/null >&2 3>&- 9>&-
}

# Take a lock so parallel runs do not both run initdb or start the same private
# server. Only the private paths take it, so reusing shared servers leaves no
# trace in .run/. Waits at most 120 s. Skipped when flock is missing.
LOCKED=0
take_lock() {
  [[ "$LOCKED" == 0 ]] || return 0
  mkdir -p "$RUN_DIR"
  LOCKED=1
  have flock || return 0
  exec 9>"$RUN_DIR/services.lock"
  flock -w 120 9 || die "another services.sh run has held $RUN_DIR/services.lock for over 120 s"
}

# ------------------------------------------------------------- postgres ---

pg_answers() {  # host port
  if have pg_isready; then
    pg_isready -q -h "$1" -p "$2" -t 3 </dev/null
  else
    tcp_open "$1" "$2"
  fi
}

pg_can_login() {  # host port user
  local out
  out="$(psql -w -h "$1" -p "$2" -U "$3" -d postgres -tAc 'select 1' </dev/null 2>/dev/null)" || return 1
  [[ "$out" == 1 ]]
}

valid_db_name() { [[ "$DB_NAME" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; }

# Create $DB_NAME if it is missing. If another process creates it at the same
# moment, that is fine.
pg_create_db() {  # host port user
  local host="$1" port="$2" user="$3" exists
  local q="select 1 from pg_database where datname = '$DB_NAME'"
  exists="$(psql -w -h "$host" -p "$port" -U "$user" -d postgres -tAc "$q" </dev/null)" \
    || die "cannot query databases on $host:$port as $user"
  [[ "$exists" == 1 ]] && return 0
  log "creating database $DB_NAME on $host:$port"
  if have createdb; then
    createdb -w -h "$host" -p "$port" -U "$user" "$DB_NAME" </dev/null 2>/dev/null && return 0
  else
    psql -w -h "$host" -p "$port" -U "$user" -d postgres -qc "CREATE DATABASE \"$DB_NAME\"" \
      </dev/null 2>/dev/null && return 0
  fi
  exists="$(psql -w -h "$host" -p "$port" -U "$user" -d postgres -tAc "$q" </dev/null)" || true
  [[ "$exists" == 1 ]] || die "could not create database $DB_NAME on $host:$port"
}

# Look for initdb + pg_ctl and set PG_INITDB / PG_CTL. Checks PATH first, then
# the newest /usr/lib/postgresql/*/bin (and /usr/pgsql-*/bin on RPM systems).
# If the private data dir already exists, binaries must match its major version.
find_pg_bins() {
  PG_INITDB="" PG_CTL=""
  local want="" dir ver
  [[ -f "$PG_DATA/PG_VERSION" ]] && want="$(<"$PG_DATA/PG_VERSION")"
  local candidates=()
  if have initdb && have pg_ctl; then
    candidates+=("$(dirname "$(command -v pg_ctl)")|$(command -v initdb)")
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin /usr/pgsql-*/bin 2>/dev/null | sort -rV); do
    candidates+=("$dir|$dir/initdb")
  done
  local c
  for c in ${candidates[@]+"${candidates[@]}"}; do
    dir="${c%%|*}"
    [[ -x "$dir/pg_ctl" && -x "${c#*|}" ]] || continue
    if [[ -n "$want" ]]; then
      ver="$("$dir/pg_ctl" --version 2>/dev/null | sed -E 's/^[^0-9]*([0-9]+).*/\1/')" || ver=""
      [[ "$ver" == "$want" ]] || continue
    fi
    PG_CTL="$dir/pg_ctl" PG_INITDB="${c#*|}"
    return 0
  done
  return 1
}

# Postgres will not run as root. Under root we run its tools as the `postgres` user.
as_pg() {
  if ! is_root; then "$@"; return; fi
  if have runuser; then
    runuser -u postgres -- "$@"
  elif have sudo; then
    sudo -n -u postgres -- "$@"
  else
    su -s "$BASH" -c "$(printf '%q ' "$@")" postgres
  fi
}

ensure_pg_os_user() {
  is_root || return 0
  id postgres >/dev/null 2>&1 && return 0
  log "creating system user postgres (Postgres refuses to run as root)"
  useradd -r -M -d /nonexistent -s /usr/sbin/nologin postgres
}

private_pg_running() {
  [[ -f "$PG_DATA/PG_VERSION" && -n "${PG_CTL:-}" ]] || return 1
  as_pg "$PG_CTL" status -D "$PG_DATA" >/dev/null 2>&1
}

start_private_pg() {
  take_lock
  if ! find_pg_bins; then
    if can_install; then
      apt_install postgresql
      find_pg_bins || true
    fi
  fi
  local need="initdb, pg_ctl"
  [[ -f "$PG_DATA/PG_VERSION" ]] && need="$need for PostgreSQL $(<"$PG_DATA/PG_VERSION"), the version of ${PG_DATA#"$ROOT"/}"
  [[ -n "$PG_CTL" ]] || die "no PostgreSQL server binaries ($need) found.
  Install them, e.g. 'apt-get install postgresql' (Debian/Ubuntu), 'brew install postgresql' (macOS),
  or set DATABASE_URL to an existing server."
  PATH="$PATH:$(dirname "$PG_CTL")"   # fallback for psql/createdb/pg_isready
  log "using PostgreSQL binaries: $PG_CTL ($("$PG_CTL" --version 2>/dev/null | head -n1))"

  ensure_pg_os_user
  mkdir -p "$PG_DIR"
  if is_root; then
    chown postgres: "$PG_DIR"
    as_pg test -w "$PG_DIR" || die "user postgres cannot write to $PG_DIR (check permissions of its parent directories)"
  fi

  if [[ ! -d "$PG_DATA" || -z "$(ls -A "$PG_DATA" 2>/dev/null)" ]]; then
    log "initialising private cluster in $PG_DATA"
    local out
    out="$(as_pg "$PG_INITDB" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C --no-sync </dev/null 2>&1)" \
      || { printf '%s\n' "$out" >&2; die "initdb failed"; }
  fi

  if private_pg_running; then
    log "private PostgreSQL already running on port $PG_PORT"
  elif pg_answers 127.0.0.1 "$PG_PORT"; then
    log "port $PG_PORT already answers but is not our cluster; reusing it (stop will not touch it)"
  else
    log "starting private PostgreSQL on 127.0.0.1:$PG_PORT (log: ${PG_LOG#"$ROOT"/})"
    as_pg "$PG_CTL" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
      -o "-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1" start </dev/null >&2 3>&- 9>&- \
      || { tail -n 20 "$PG_LOG" >&2 2>/dev/null || true; die "private PostgreSQL did not start"; }
  fi
  pg_can_login 127.0.0.1 "$PG_PORT" postgres \
    || die "cannot log in to 127.0.0.1:$PG_PORT as postgres"
}

ensure_pg() {
  valid_db_name || die "WALLET_DB_NAME must match [A-Za-z_][A-Za-z0-9_]* (got '$DB_NAME')"

  if [[ -n "${DATABASE_URL:-}" ]]; then
    if have pg_isready; then
      pg_isready -q -d "$DATABASE_URL" -t 10 </dev/null \
        || die "DATABASE_URL ($(redact "$DATABASE_URL")) does not answer"
    fi
    log "postgres: using DATABASE_URL from the environment ($(redact "$DATABASE_URL"))"
    emit_export DATABASE_URL "$DATABASE_URL"
    return
  fi

  if [[ "$SKIP_DEFAULT" != 1 ]] && pg_answers 127.0.0.1 5432; then
    if have psql; then
      local u
      for u in postgres "$(whoami)" root; do
        if pg_can_login 127.0.0.1 5432 "$u"; then
          pg_create_db 127.0.0.1 5432 "$u"
          log "postgres: reusing shared server 127.0.0.1:5432 as $u"
          emit_export DATABASE_URL "postgresql://$u@127.0.0.1:5432/$DB_NAME"
          return
        fi
      done
      log "postgres: 127.0.0.1:5432 answers but none of postgres/$(whoami)/root can log in without a password; starting a private server"
    else
      log "postgres: 127.0.0.1:5432 answers but psql is missing; starting a private server"
    fi
  fi

  start_private_pg
  pg_create_db 127.0.0.1 "$PG_PORT" postgres
  log "postgres: using private server 127.0.0.1:$PG_PORT"
  emit_export DATABASE_URL "postgresql://postgres@127.0.0.1:$PG_PORT/$DB_NAME"
}

stop_private_pg() {
  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    log "postgres: no private cluster in ${PG_DATA#"$ROOT"/}"
    return
  fi
  find_pg_bins || die "cannot find pg_ctl to stop the private cluster in $PG_DATA"
  if private_pg_running; then
    log "postgres: stopping private server (${PG_DATA#"$ROOT"/})"
    as_pg "$PG_CTL" -D "$PG_DATA" -m fast -w -t 60 stop </dev/null >&2
  else
    log "postgres: private server not running"
  fi
}

# ---------------------------------------------------------------- redis ---

redis_ping() {  # host port
  if have redis-cli; then
    [[ "$(with_timeout 5 redis-cli -h "$1" -p "$2" ping </dev/null 2>/dev/null)" == PONG ]]
  else
    with_timeout 3 bash -c '
      exec 3<>"/dev/tcp/$0/$1" || exit 1
      printf "PING\r\n" >&3
      IFS= read -r -t 2 line <&3 || exit 1
      [[ "$line" == +PONG* ]]' "$1" "$2" 2>/dev/null
  fi
}

redis_pid_alive() {  # succeed if the pidfile names a live redis-server
  local pid
  [[ -f "$REDIS_PIDFILE" ]] || return 1
  pid="$(<"$REDIS_PIDFILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid that now belongs to something else.
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q redis || return 1
  fi
}

start_private_redis() {
  take_lock
  if ! have redis-server; then
    can_install && apt_install redis-server
    have redis-server || die "redis-server not found.
  Install it, e.g. 'apt-get install redis-server' (Debian/Ubuntu), 'brew install redis' (macOS),
  or set REDIS_URL to an existing server."
  fi
  mkdir -p "$REDIS_DIR"
  if redis_ping 127.0.0.1 "$REDIS_PORT"; then
    redis_pid_alive || log "port $REDIS_PORT already answers but not from our pidfile; reusing it (stop will not touch it)"
    return
  fi
  log "starting private Redis on 127.0.0.1:$REDIS_PORT (log: ${REDIS_LOG#"$ROOT"/})"
  # Absolute paths: redis chdirs into --dir before it opens the log and pid files.
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
    --save "" --appendonly no --dir "$REDIS_DIR" \
    --logfile "$REDIS_LOG" --pidfile "$REDIS_PIDFILE" </dev/null >&2 3>&- 9>&- \
    || die "redis-server failed to start (see ${REDIS_LOG#"$ROOT"/})"
  local i
  for i in $(seq 1 50); do          # up to ~10 s
    redis_ping 127.0.0.1 "$REDIS_PORT" && return 0
    sleep 0.2
  done
  tail -n 20 "$REDIS_LOG" >&2 2>/dev/null || true
  die "private Redis did not answer on 127.0.0.1:$REDIS_PORT within 10 s"
}

ensure_redis() {
  if [[ -n "${REDIS_URL:-}" ]]; then
    if have redis-cli; then
      # -u with a password makes redis-cli print a warning, so drop its stderr.
      [[ "$(with_timeout 10 redis-cli -u "$REDIS_URL" ping </dev/null 2>/dev/null)" == PONG ]] \
        || die "REDIS_URL ($(redact "$REDIS_URL")) does not answer PING"
    fi
    log "redis: using REDIS_URL from the environment ($(redact "$REDIS_URL"))"
    emit_export REDIS_URL "$REDIS_URL"
    return
  fi

  if [[ "$SKIP_DEFAULT" != 1 ]] && redis_ping 127.0.0.1 6379; then
    log "redis: reusing shared server 127.0.0.1:6379"
    emit_export REDIS_URL "redis://127.0.0.1:6379/0"
    return
  fi

  start_private_redis
  log "redis: using private server 127.0.0.1:$REDIS_PORT"
  emit_export REDIS_URL "redis://127.0.0.1:$REDIS_PORT/0"
}

stop_private_redis() {
  if ! redis_pid_alive; then
    log "redis: private server not running"
    rm -f "$REDIS_PIDFILE"
    return
  fi
  local pid i
  pid="$(<"$REDIS_PIDFILE")"
  log "redis: stopping private server (pid $pid)"
  kill -TERM "$pid"
  for i in $(seq 1 50); do          # up to ~10 s
    kill -0 "$pid" 2>/dev/null || { rm -f "$REDIS_PIDFILE"; return 0; }
    sleep 0.2
  done
  die "redis pid $pid did not exit within 10 s"
}

# --------------------------------------------------------------- status ---

status() {
  local pg redis
  if [[ -n "${DATABASE_URL:-}" ]]; then
    pg="DATABASE_URL from environment: $(redact "$DATABASE_URL")"
  elif [[ "$SKIP_DEFAULT" != 1 ]] && pg_answers 127.0.0.1 5432; then
    pg="shared server on 127.0.0.1:5432 (database $DB_NAME)"
  elif pg_answers 127.0.0.1 "$PG_PORT"; then
    pg="private server on 127.0.0.1:$PG_PORT, running (database $DB_NAME)"
  else
    pg="private server on 127.0.0.1:$PG_PORT, not running ('ensure' would start it)"
  fi
  if [[ -n "${REDIS_URL:-}" ]]; then
    redis="REDIS_URL from environment: $(redact "$REDIS_URL")"
  elif [[ "$SKIP_DEFAULT" != 1 ]] && redis_ping 127.0.0.1 6379; then
    redis="shared server on 127.0.0.1:6379"
  elif redis_ping 127.0.0.1 "$REDIS_PORT"; then
    redis="private server on 127.0.0.1:$REDIS_PORT, running"
  else
    redis="private server on 127.0.0.1:$REDIS_PORT, not running ('ensure' would start it)"
  fi
  printf 'postgres: %s\nredis:    %s\n' "$pg" "$redis"
}

# ----------------------------------------------------------------- main ---

usage() {
  sed -n 's/^#   //p' "${BASH_SOURCE[0]}" | sed -n '/^scripts\/services.sh/p' >&2
  exit 2
}

main() {
  case "${1:-}" in
    ensure)
      # Keep the real stdout on fd 3 for the export lines. Point fd 1 at stderr
      # so stray output from any tool cannot get into the caller's eval.
      exec 3>&1 1>&2
      ensure_pg
      ensure_redis
      printf '%s\n' "${EXPORTS[@]}" >&3
      ;;
    stop)
      [[ -d "$RUN_DIR" ]] || { log "nothing to stop (no ${RUN_DIR#"$ROOT"/}/)"; exit 0; }
      take_lock
      stop_private_pg
      stop_private_redis
      ;;
    status) status ;;
    *) usage ;;
  esac
}

main "$@"
