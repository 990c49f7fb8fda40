# shellcheck shell=bash
# Shared helpers for the test-service scripts (sourced, never executed).
#
# Provides:
#   GB_REPO_ROOT, GB_SERVICES_DIR (default <repo>/.gb-services), GEARBROKER_VENV
#   gb_log MSG...            message on stderr
#   gb_die MSG...            message on stderr, exit 1
#   apt_install PKG...       install the missing Debian packages (apt-get update once per boot)
#   wait_for [-t SEC] CMD... run CMD (output discarded) until it succeeds; fail after SEC
#                            whole seconds (default 30)
#   free_port                print a free TCP port on 127.0.0.1
#   port_in_use PORT         succeed when something listens on 127.0.0.1:PORT
#   http_ok URL              succeed when URL answers an HTTP GET (any status below 500)
#   write_env NAME VAR=VALUE...  write $GB_SERVICES_DIR/NAME.env as `export VAR=VALUE` lines
#   remove_env NAME          delete $GB_SERVICES_DIR/NAME.env

GB_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
GB_SERVICES_DIR="${GB_SERVICES_DIR:-$GB_REPO_ROOT/.gb-services}"
GEARBROKER_VENV="${GEARBROKER_VENV:-$GB_REPO_ROOT/.venv}"
export GB_REPO_ROOT GB_SERVICES_DIR GEARBROKER_VENV

gb_log() {
    printf '%s: %s\n' "$(basename "$0")" "$*" >&2
}

gb_die() {
    gb_log "error: $*"
    exit 1
}

_gb_apt_lists_present() {
    compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

_gb_apt_update_once() {
    local stamp="$GB_SERVICES_DIR/.apt-updated" boot_id
    boot_id="$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)"
    if _gb_apt_lists_present && [[ -f "$stamp" && "$(cat "$stamp")" == "$boot_id" ]]; then
        return 0
    fi
    gb_log "apt-get update"
    apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null
    mkdir -p "$GB_SERVICES_DIR"
    printf '%s\n' "$boot_id" >"$stamp"
}

apt_install() {
    local pkg missing=()
    for pkg in "$@"; do
        if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" != installed ]]; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]})) || return 0
    [[ "$(id -u)" == 0 ]] || gb_die "need root to install: ${missing[*]}"
    command -v apt-get >/dev/null || gb_die "apt-get not found; install by hand: ${missing[*]}"
    _gb_apt_update_once
    gb_log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 \
        install --no-install-recommends "${missing[@]}" >/dev/null
}

wait_for() {
    local timeout=30
    if [[ "${1:-}" == -t ]]; then
        timeout="$2"
        shift 2
    fi
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            gb_log "timed out after ${timeout}s waiting for: $*"
            return 1
        fi
        sleep 0.2
    done
}

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

http_ok() {
    python3 - "$1" <<'PY'
import sys
import urllib.error
import urllib.request

try:
    urllib.request.urlopen(sys.argv[1], timeout=2).close()
except urllib.error.HTTPError as exc:
    sys.exit(0 if exc.code < 500 else 1)
except OSError:
    sys.exit(1)
PY
}

write_env() {
    local name="$1" assignment tmp
    shift
    mkdir -p "$GB_SERVICES_DIR"
    tmp="$(mktemp "$GB_SERVICES_DIR/.$name.env.XXXXXX")"
    for assignment in "$@"; do
        printf 'export %s=%q\n' "${assignment%%=*}" "${assignment#*=}" >>"$tmp"
    done
    chmod 600 "$tmp"
    mv -f "$tmp" "$GB_SERVICES_DIR/$name.env"
}

remove_env() {
    rm -f "$GB_SERVICES_DIR/$1.env"
}
