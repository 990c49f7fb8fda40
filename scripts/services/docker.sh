#!/usr/bin/env bash
# Private Docker engine for the test suite (Debian `docker.io`), never the system one.
#
# Usage: scripts/services/docker.sh start|stop|status
#
# start   installs `docker.io` if missing, starts dockerd in the background with everything
#         under $GB_SERVICES_DIR/docker (data root, exec root, pid file, log) and the socket
#         $GB_SERVICES_DIR/docker.sock; no iptables, no bridge (containers use --network=none
#         or host), cgroupfs driver (no systemd). Waits until `docker info` answers, imports
#         the test images, runs a smoke container and writes $GB_SERVICES_DIR/docker.env
#         exporting DOCKER_HOST. Running it again on a live engine only refreshes those.
# stop    stops dockerd (SIGTERM, SIGKILL after 30 s) and removes docker.env.
# status  prints DOCKER_HOST and exits 0 when the engine answers, exits 3 when not.
#
# Use /usr/bin/docker (docker.io's client): /usr/local/bin/docker may be a different client.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/services/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/services/lib_extra.sh
source "$here/lib_extra.sh"

DOCKER_ROOT="$GB_SERVICES_DIR/docker"
SOCKET="$GB_SERVICES_DIR/docker.sock"
PIDFILE="$DOCKER_ROOT/dockerd.pid"
LOG="$DOCKER_ROOT/dockerd.log"
HOST_URL="unix://$SOCKET"
DOCKERD_PID=
SMOKE_IMAGE=localhost/gearbroker/busybox:1

engine_answers() {
    "$(docker_cli)" -H "$HOST_URL" info >/dev/null 2>&1
}

# Succeeds once the engine answers or the dockerd just started has exited.
dockerd_settled() {
    engine_answers || ! proc_alive "$DOCKERD_PID"
}

start_dockerd() {
    # Unix socket paths are limited to 107 bytes (containerd's lives under the exec root).
    ((${#DOCKER_ROOT} < 70)) || gb_die "GB_SERVICES_DIR is too long for dockerd's sockets"
    mkdir -p "$DOCKER_ROOT/data" "$DOCKER_ROOT/exec"
    rm -f "$SOCKET" "$PIDFILE"
    gb_log "starting dockerd (log: $LOG)"
    nohup setsid /usr/sbin/dockerd \
        --iptables=false --ip6tables=false --bridge=none \
        --exec-opt native.cgroupdriver=cgroupfs \
        --data-root "$DOCKER_ROOT/data" --exec-root "$DOCKER_ROOT/exec" \
        --pidfile "$PIDFILE" -H "$HOST_URL" \
        </dev/null >>"$LOG" 2>&1 &
    DOCKERD_PID=$!
    wait_for -t 60 dockerd_settled || true
    engine_answers || {
        tail -n 20 "$LOG" >&2
        gb_die "dockerd did not answer on $SOCKET"
    }
}

cmd_start() {
    local out
    apt_install docker.io
    if pid_alive "$PIDFILE" && engine_answers; then
        gb_log "dockerd already running (pid $(cat "$PIDFILE"))"
    else
        kill_pidfile "$PIDFILE" 30
        start_dockerd
    fi
    export DOCKER_HOST="$HOST_URL"
    "$GB_REPO_ROOT/scripts/images/build-test-images.sh" docker
    out="$("$(docker_cli)" run --rm --network=none "$SMOKE_IMAGE" echo docker-ok)" ||
        gb_die "smoke container failed"
    [[ "$out" == docker-ok ]] || gb_die "smoke container printed '$out'"
    write_env docker "DOCKER_HOST=$HOST_URL"
    gb_log "dockerd ready at $HOST_URL; source $GB_SERVICES_DIR/docker.env"
}

cmd_stop() {
    if pid_alive "$PIDFILE"; then
        kill_pidfile "$PIDFILE" 30
        gb_log "dockerd stopped"
    else
        rm -f "$PIDFILE"
        gb_log "dockerd is not running"
    fi
    rm -f "$SOCKET"
    remove_env docker
}

cmd_status() {
    if pid_alive "$PIDFILE" && engine_answers; then
        echo "running: DOCKER_HOST=$HOST_URL (pid $(cat "$PIDFILE"), data $DOCKER_ROOT/data)"
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
