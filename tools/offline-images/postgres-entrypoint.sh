#!/bin/sh
# Entrypoint of aos-postgres:local (tools/offline_images.sh): the part of the official postgres
# image's entrypoint that docker-compose.yml relies on, for an engine that cannot pull it.
# On an empty data directory: initdb with POSTGRES_USER / POSTGRES_PASSWORD (required) and
# POSTGRES_INITDB_ARGS, listen on every address with scram-sha-256 for every host (as the
# official image does), create POSTGRES_DB; then run postgres in the foreground.
set -eu
# Started as root (as the official image is): makes the data and socket directories (/run is
# empty in a fresh container) the postgres user's, then runs again as that user.
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA
if [ "$(id -u)" = 0 ]; then
    install -d -o postgres -g postgres -m 0700 "$PGDATA"
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words, as in the official image
    initdb --username="$user" --pwfile="$pwfile" ${POSTGRES_INITDB_ARGS:-}
    rm -f "$pwfile"
    printf '%s\n' "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    printf '%s\n' "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        printf 'CREATE DATABASE "%s";\n' "$db" | postgres --single -D "$PGDATA" postgres > /dev/null
    fi
fi
exec postgres "$@"
