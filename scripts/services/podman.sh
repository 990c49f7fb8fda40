#!/usr/bin/env bash
# Podman (rootful, daemonless) configured for this kind of machine, plus the offline test images.
#
# Usage: scripts/services/podman.sh start|stop|status
#
# start   installs Debian `podman` + `runc` if missing, writes $GB_SERVICES_DIR/containers.conf
#         (runtime runc: crun fails on the hybrid cgroup setup; explicit default_ulimits: the
#         inherited ones make `setrlimit` fail), imports the test images
#         (scripts/images/build-test-images.sh podman), runs a smoke container, and writes
#         $GB_SERVICES_DIR/podman.env exporting CONTAINERS_CONF.
# stop    removes podman.env (there is no daemon; images and containers.conf are kept).
# status  exits 0 when podman, containers.conf and the busybox image are usable, 3 when not.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/services/lib.sh
source "$here/lib.sh"

CONF="$GB_SERVICES_DIR/containers.conf"
SMOKE_IMAGE=localhost/gearbroker/busybox:1

write_conf() {
    mkdir -p "$GB_SERVICES_DIR"
    cat >"$CONF" <<'EOF'
# Written by scripts/services/podman.sh: selected through CONTAINERS_CONF.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
}

cmd_start() {
    local out
    apt_install podman runc
    write_conf
    export CONTAINERS_CONF="$CONF"
    "$GB_REPO_ROOT/scripts/images/build-test-images.sh" podman
    out="$(podman run --rm --network=none "$SMOKE_IMAGE" echo podman-ok)" ||
        gb_die "smoke container failed"
    [[ "$out" == podman-ok ]] || gb_die "smoke container printed '$out'"
    write_env podman "CONTAINERS_CONF=$CONF"
    gb_log "podman $(podman version --format '{{.Client.Version}}') ready; source $GB_SERVICES_DIR/podman.env"
}

cmd_stop() {
    remove_env podman
    gb_log "podman is daemonless: removed podman.env, kept images and $CONF"
}

cmd_status() {
    if command -v podman >/dev/null && [[ -f "$CONF" ]] &&
        CONTAINERS_CONF="$CONF" podman image exists "$SMOKE_IMAGE"; then
        echo "ready: CONTAINERS_CONF=$CONF, image $SMOKE_IMAGE"
    else
        echo "not ready"
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
