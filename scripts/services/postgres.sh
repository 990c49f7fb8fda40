#!/usr/bin/env bash
# Private PostgreSQL 15 cluster for the test suite (never the Debian default cluster).
#
# Usage: scripts/services/postgres.sh start|stop|status
#
# start   installs Debian `postgresql` if missing, creates the cluster in $GB_SERVICES_DIR/pg
#         (owned by user postgres), starts it with pg_ctl on 127.0.0.1 (port GB_PG_PORT or a
#         free one), ensures role `gearbroker` (password auth; SUPERUSER on this private test
#         cluster, so per-test databases can be force-dropped) and database
#         `gearbroker_test`, and writes $GB_SERVICES_DIR/postgres.env exporting
#         GEARBROKER_TEST_PG_URL. Running it again on a live cluster only rewrites the env file.
# stop    stops the cluster and removes postgres.env.
# status  prints the URL and exits 0 when running, exits 3 when not.
#
# The cluster trades durability for speed (fsync=off, synchronous_commit=off): tests only.
set -euo pipefail

# shellcheck source=scripts/services/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_VERSION=15
PG_BIN="/usr/lib/postgresql/$PG_VERSION/bin"
PG_ROOT="$GB_SERVICES_DIR/pg"
PG_DATA="$PG_ROOT/data"
PG_RUN="$PG_ROOT/run"
PG_LOG="$PG_ROOT/postgresql.log"
PG_PASSWORD_FILE="$PG_ROOT/password"
PG_ROLE=gearbroker
PG_DB=gearbroker_test

as_postgres() {
    (cd / && runuser -u postgres -- "$@")
}

pg_ctl() {
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" "$@"
}

is_running() {
    [[ -f "$PG_DATA/PG_VERSION" ]] && pg_ctl status >/dev/null 2>&1
}

current_port() {
    sed -n "s/^port = \([0-9]*\)$/\1/p" "$PG_DATA/gearbroker.conf" 2>/dev/null
}

install_server() {
    [[ -x "$PG_BIN/initdb" ]] || apt_install postgresql
    [[ -x "$PG_BIN/initdb" ]] || gb_die "$PG_BIN/initdb missing after installing postgresql"
    id -u postgres >/dev/null 2>&1 || gb_die "user postgres does not exist"
}

init_cluster() {
    mkdir -p "$PG_ROOT"
    chown postgres:postgres "$PG_ROOT"
    chmod 700 "$PG_ROOT"
    as_postgres test -w "$PG_ROOT" ||
        gb_die "user postgres cannot write $PG_ROOT (a parent directory is not searchable by it)"
    [[ -f "$PG_DATA/PG_VERSION" ]] && return 0
    gb_log "initdb $PG_DATA"
    rm -rf "$PG_DATA"
    as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 --no-sync >/dev/null
    printf "\ninclude_if_exists = 'gearbroker.conf'\n" >>"$PG_DATA/postgresql.conf"
    if [[ ! -s "$PG_PASSWORD_FILE" ]]; then
        python3 -c 'import secrets; print(secrets.token_hex(16))' >"$PG_PASSWORD_FILE"
        chmod 600 "$PG_PASSWORD_FILE"
    fi
}

choose_port() {
    local port
    if [[ -n "${GB_PG_PORT:-}" ]]; then
        port_in_use "$GB_PG_PORT" && gb_die "GB_PG_PORT=$GB_PG_PORT is already in use"
        echo "$GB_PG_PORT"
        return 0
    fi
    port="$(current_port)"
    if [[ -n "$port" ]] && ! port_in_use "$port"; then
        echo "$port"
    else
        free_port
    fi
}

write_conf() {
    local port="$1"
    cat >"$PG_DATA/gearbroker.conf" <<EOF
# Written by scripts/services/postgres.sh on every start: test cluster only.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PG_RUN'
max_connections = 200
# A quarter of a small server's memory, as PostgreSQL's docs advise (the 128MB default
# re-read a million-file catalog's index pages from the OS on every join search).
shared_buffers = 1GB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    chown postgres:postgres "$PG_DATA/gearbroker.conf"
}

ensure_role_and_db() {
    local port="$1"
    as_postgres "$PG_BIN/psql" -X -q -h "$PG_RUN" -p "$port" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 -v role="$PG_ROLE" -v db="$PG_DB" \
        -v pw="$(cat "$PG_PASSWORD_FILE")" >/dev/null <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" LOGIN SUPERUSER CREATEDB PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
}

write_pg_env() {
    local port="$1"
    write_env postgres \
        "GEARBROKER_TEST_PG_URL=postgresql+psycopg://$PG_ROLE:$(cat "$PG_PASSWORD_FILE")@127.0.0.1:$port/$PG_DB"
}

cmd_start() {
    local port
    install_server
    init_cluster
    if is_running; then
        port="$(current_port)"
        if [[ -n "${GB_PG_PORT:-}" && "$GB_PG_PORT" != "$port" ]]; then
            gb_log "already running on port $port; stop it first to move it to GB_PG_PORT=$GB_PG_PORT"
        fi
    else
        port="$(choose_port)"
        write_conf "$port"
        mkdir -p "$PG_RUN"
        chown postgres:postgres "$PG_RUN"
        pg_ctl -l "$PG_LOG" -w -t 60 start >/dev/null ||
            { tail -n 20 "$PG_LOG" >&2; gb_die "PostgreSQL did not start (log: $PG_LOG)"; }
    fi
    wait_for -t 30 as_postgres "$PG_BIN/pg_isready" -q -h "$PG_RUN" -p "$port" ||
        gb_die "PostgreSQL is not ready (log: $PG_LOG)"
    ensure_role_and_db "$port"
    write_pg_env "$port"
    gb_log "PostgreSQL $PG_VERSION on 127.0.0.1:$port; source $GB_SERVICES_DIR/postgres.env"
}

cmd_stop() {
    if is_running; then
        pg_ctl -m fast -w -t 60 stop >/dev/null
        gb_log "PostgreSQL stopped"
    else
        gb_log "PostgreSQL is not running"
    fi
    remove_env postgres
}

cmd_status() {
    if is_running; then
        echo "running: postgresql+psycopg://$PG_ROLE@127.0.0.1:$(current_port)/$PG_DB (data $PG_DATA)"
    else
        echo "not running"
        return 3
    fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
