#!/bin/sh
# First start: a cluster in $PGDATA whose superuser $POSTGRES_USER has the
# password $POSTGRES_PASSWORD (scram-sha-256 over the network, no other
# way in), and the database $POSTGRES_DB. Later starts: the cluster as it is.
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
# A first start that stopped halfway (its mark is still there) is done
# again from the start: nothing but the empty cluster was written yet.
if [ -e "$PGDATA/agentctl-init-incomplete" ]; then
    echo "postgres: the first start stopped halfway; initialising again"
    find "$PGDATA" -mindepth 1 -delete
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres: POSTGRES_PASSWORD is empty; the stack's .env gives one (agentctl up writes it)" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 >/dev/null
    rm -f "$pwfile"
    : >"$PGDATA/agentctl-init-incomplete"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    # The database, made by a server that listens on its socket only.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$POSTGRES_DB" != postgres ]; then
        PGPASSWORD=$POSTGRES_PASSWORD psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -q \
            -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    rm -f "$PGDATA/agentctl-init-incomplete"
    echo "postgres: initialised $PGDATA"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
