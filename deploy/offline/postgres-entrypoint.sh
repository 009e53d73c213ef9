#!/bin/sh
# The part of the official postgres image's entrypoint that deploy/docker-compose.yml relies
# on: on first start (an empty $PGDATA), initdb with POSTGRES_USER as the superuser and the
# password from POSTGRES_PASSWORD_FILE, password (SCRAM) authentication for every TCP client,
# and POSTGRES_DB created; then the command (`postgres -c ...`) replaces this shell, so the
# server is PID 1 and gets the stop signal itself.
set -eu
: "${PGDATA:?}" "${POSTGRES_PASSWORD_FILE:?the password file (POSTGRES_PASSWORD_FILE) is required}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "postgres-entrypoint: initialising $PGDATA for user $user, database $db"
    initdb -D "$PGDATA" -U "$user" --pwfile="$POSTGRES_PASSWORD_FILE" -E UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    # Other containers on the project network connect over TCP, with the password.
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        echo "CREATE DATABASE \"$db\" OWNER \"$user\"" \
            | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
fi
exec "$@"
