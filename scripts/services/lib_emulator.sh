# shellcheck shell=bash
# One background server per NAME, started from a command line (sourced after lib.sh and
# lib_extra.sh, never executed).  State lives in $GB_SERVICES_DIR/NAME.{pid,port,log}.
#
# Provides:
#   emu_running NAME              succeed while NAME's server runs
#   emu_port NAME                 print NAME's port
#   emu_start NAME PATH CMD...    unless NAME runs: start CMD in its own session, every
#                                 "{port}" in it replaced by $GB_<NAME>_PORT or a free port,
#                                 and wait (60 s) until http://127.0.0.1:PORT/PATH answers
#   emu_stop NAME                 stop NAME's server (SIGTERM, then SIGKILL after 10 s)
#   emu_status NAME               print "running: PORT (pid PID)" or "not running" (exit 3)

emu_running() {
    pid_alive "$GB_SERVICES_DIR/$1.pid" && [[ -s "$GB_SERVICES_DIR/$1.port" ]]
}

emu_port() {
    cat "$GB_SERVICES_DIR/$1.port"
}

emu_start() {
    local name="$1" path="$2" port_var port pid arg args=() deadline
    shift 2
    emu_running "$name" && return 0
    port_var="GB_$(tr '[:lower:]-' '[:upper:]_' <<<"$name")_PORT"
    if [[ -n "${!port_var:-}" ]]; then
        port_in_use "${!port_var}" && gb_die "$port_var=${!port_var} is already in use"
        port="${!port_var}"
    else
        port="$(free_port)"
    fi
    for arg in "$@"; do
        args+=("${arg//\{port\}/$port}")
    done
    mkdir -p "$GB_SERVICES_DIR"
    rm -f "$GB_SERVICES_DIR/$name.pid" "$GB_SERVICES_DIR/$name.port"
    # Own session (setsid) so the server outlives the caller; the inner shell records its
    # pid, then becomes the server.
    # shellcheck disable=SC2016  # $$, $1 and $@ belong to the inner shell
    setsid nohup bash -c 'echo "$$" >"$1"; shift; exec "$@"' "$name-launch" \
        "$GB_SERVICES_DIR/$name.pid" "${args[@]}" >"$GB_SERVICES_DIR/$name.log" 2>&1 </dev/null &
    wait_for -t 10 test -s "$GB_SERVICES_DIR/$name.pid" ||
        gb_die "$name did not start (log: $GB_SERVICES_DIR/$name.log)"
    pid="$(cat "$GB_SERVICES_DIR/$name.pid")"
    deadline=$((SECONDS + 60))
    until http_ok "http://127.0.0.1:$port/$path"; do
        if ! proc_alive "$pid" || ((SECONDS >= deadline)); then
            tail -n 20 "$GB_SERVICES_DIR/$name.log" >&2
            kill_pidfile "$GB_SERVICES_DIR/$name.pid" 5
            gb_die "$name did not answer on 127.0.0.1:$port (log: $GB_SERVICES_DIR/$name.log)"
        fi
        sleep 0.2
    done
    echo "$port" >"$GB_SERVICES_DIR/$name.port"
}

emu_stop() {
    if pid_alive "$GB_SERVICES_DIR/$1.pid"; then
        kill_pidfile "$GB_SERVICES_DIR/$1.pid" 10
        gb_log "$1 stopped"
    else
        gb_log "$1 is not running"
    fi
    rm -f "$GB_SERVICES_DIR/$1.pid" "$GB_SERVICES_DIR/$1.port"
}

emu_status() {
    if emu_running "$1"; then
        echo "running: 127.0.0.1:$(emu_port "$1") (pid $(cat "$GB_SERVICES_DIR/$1.pid"))"
    else
        echo "not running"
        return 3
    fi
}
