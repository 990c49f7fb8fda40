#!/usr/bin/env bash
# Background moto S3 server for the test suite.
#
# Usage: scripts/services/moto.sh start|stop|status
#
# start   runs moto_server ($GEARBROKER_VENV/bin/moto_server if present, else the one on PATH)
#         on 127.0.0.1 (port GB_MOTO_PORT or a free one), waits until it answers, and writes
#         $GB_SERVICES_DIR/moto.env exporting GEARBROKER_TEST_S3_ENDPOINT and AWS test
#         credentials. Running it again on a live server only rewrites the env file.
# stop    stops the server and removes moto.env.
# status  prints the endpoint and exits 0 when running, exits 3 when not.
set -euo pipefail

# shellcheck source=scripts/services/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MOTO_PID_FILE="$GB_SERVICES_DIR/moto.pid"
MOTO_PORT_FILE="$GB_SERVICES_DIR/moto.port"
MOTO_LOG="$GB_SERVICES_DIR/moto.log"

# Succeeds while PID is a live (not zombie) moto process.
alive() {
    local pid="$1"
    [[ -r "/proc/$pid/status" ]] || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q moto
}

moto_pid() {
    local pid
    pid="$(cat "$MOTO_PID_FILE" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" && echo "$pid"
}

moto_port() {
    cat "$MOTO_PORT_FILE"
}

is_running() {
    moto_pid >/dev/null && [[ -s "$MOTO_PORT_FILE" ]]
}

moto_binary() {
    if [[ -x "$GEARBROKER_VENV/bin/moto_server" ]]; then
        echo "$GEARBROKER_VENV/bin/moto_server"
    elif command -v moto_server >/dev/null; then
        command -v moto_server
    else
        gb_die "moto_server not found: run scripts/bootstrap.sh (installs moto[server])"
    fi
}

server_ready() {
    local pid="$1" port="$2"
    alive "$pid" || return 2
    http_ok "http://127.0.0.1:$port/"
}

launch() {
    local binary port pid status=0
    binary="$(moto_binary)"
    if [[ -n "${GB_MOTO_PORT:-}" ]]; then
        port_in_use "$GB_MOTO_PORT" && gb_die "GB_MOTO_PORT=$GB_MOTO_PORT is already in use"
        port="$GB_MOTO_PORT"
    else
        port="$(free_port)"
    fi
    mkdir -p "$GB_SERVICES_DIR"
    rm -f "$MOTO_PID_FILE"
    # Own session (setsid) so the server outlives the caller's terminal and process group;
    # the inner shell records its own pid, then becomes moto_server.
    # shellcheck disable=SC2016  # $$, $1 and $@ belong to the inner shell
    setsid nohup bash -c 'echo "$$" >"$1"; shift; exec "$@"' moto-launch "$MOTO_PID_FILE" \
        "$binary" -H 127.0.0.1 -p "$port" >"$MOTO_LOG" 2>&1 </dev/null &
    wait_for -t 10 test -s "$MOTO_PID_FILE" || gb_die "moto_server did not start (log: $MOTO_LOG)"
    pid="$(cat "$MOTO_PID_FILE")"
    local deadline=$((SECONDS + 30))
    until server_ready "$pid" "$port"; do
        status=$?
        if ((status == 2 || SECONDS >= deadline)); then
            tail -n 20 "$MOTO_LOG" >&2
            kill "$pid" 2>/dev/null || true
            rm -f "$MOTO_PID_FILE"
            gb_die "moto_server did not answer on 127.0.0.1:$port (log: $MOTO_LOG)"
        fi
        sleep 0.2
    done
    echo "$port" >"$MOTO_PORT_FILE"
}

cmd_start() {
    is_running || launch
    local port
    port="$(moto_port)"
    write_env moto \
        "GEARBROKER_TEST_S3_ENDPOINT=http://127.0.0.1:$port" \
        AWS_ACCESS_KEY_ID=testing \
        AWS_SECRET_ACCESS_KEY=testing \
        AWS_DEFAULT_REGION=us-east-1
    gb_log "moto S3 on http://127.0.0.1:$port; source $GB_SERVICES_DIR/moto.env"
}

cmd_stop() {
    local pid
    if pid="$(moto_pid)"; then
        kill "$pid"
        local deadline=$((SECONDS + 10))
        while alive "$pid"; do
            if ((SECONDS >= deadline)); then
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
        gb_log "moto_server stopped"
    else
        gb_log "moto_server is not running"
    fi
    rm -f "$MOTO_PID_FILE" "$MOTO_PORT_FILE"
    remove_env moto
}

cmd_status() {
    if is_running; then
        echo "running: http://127.0.0.1:$(moto_port) (pid $(moto_pid))"
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
