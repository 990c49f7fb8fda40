# shellcheck shell=bash
# Extra helpers for the engine/Slurm/sshd scripts (sourced after lib.sh, never executed).
#
# Provides:
#   proc_alive PID               succeed when PID is a live process (zombies count as dead:
#                                PID 1 here may not reap orphaned daemons)
#   pid_alive PIDFILE            succeed when PIDFILE names a live process
#   kill_pidfile PIDFILE [SEC]   SIGTERM the process in PIDFILE, SIGKILL after SEC (default 20),
#                                then remove PIDFILE; succeed when nothing was running
#   docker_cli                   print the Docker client to use (/usr/bin/docker from docker.io
#                                first: /usr/local/bin/docker may be an unrelated newer client)

proc_alive() {
    local state
    state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)"
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

pid_alive() {
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(tr -dc '0-9' <"$1")"
    [[ -n "$pid" ]] && proc_alive "$pid"
}

kill_pidfile() {
    local pidfile="$1" timeout="${2:-20}" pid deadline
    if pid_alive "$pidfile"; then
        pid="$(tr -dc '0-9' <"$pidfile")"
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + timeout))
        while proc_alive "$pid"; do
            if ((SECONDS >= deadline)); then
                gb_log "pid $pid ignored SIGTERM for ${timeout}s: SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                sleep 0.2
                break
            fi
            sleep 0.1
        done
    fi
    rm -f "$pidfile"
}

docker_cli() {
    if [[ -x /usr/bin/docker ]]; then
        echo /usr/bin/docker
    else
        command -v docker || gb_die "no docker client: run scripts/services/docker.sh start"
    fi
}
