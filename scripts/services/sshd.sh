#!/usr/bin/env bash
# Private sshd on 127.0.0.1 for the SSH tests (key login as root), never the system sshd.
#
# Usage: scripts/services/sshd.sh start|stop|status
#
# start   installs `openssh-server` if missing and runs /usr/sbin/sshd with its own config,
#         host key, authorized_keys and pid file under $GB_SERVICES_DIR/ssh, listening on
#         127.0.0.1 port GB_SSHD_PORT or the first free port from 2222. A client key pair
#         ($GB_SERVICES_DIR/ssh/id_ed25519) is authorized for root through the private
#         AuthorizedKeysFile (root's ~/.ssh is never touched) and a known_hosts file is
#         written. Checks a paramiko login (strict host key, key auth, `echo ok`) and writes
#         $GB_SERVICES_DIR/sshd.env exporting GEARBROKER_TEST_SSH_{HOST,PORT,USER,KEY,KNOWN_HOSTS}.
#         Running it again on a live sshd only refreshes those.
# stop    stops the private sshd and removes sshd.env (keys are kept).
# status  prints the address and exits 0 when it runs, 3 when not.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/services/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/services/lib_extra.sh
source "$here/lib_extra.sh"

SSH_DIR="$GB_SERVICES_DIR/ssh"
CONFIG="$SSH_DIR/sshd_config"
HOST_KEY="$SSH_DIR/ssh_host_ed25519_key"
CLIENT_KEY="$SSH_DIR/id_ed25519"
AUTHORIZED="$SSH_DIR/authorized_keys"
KNOWN_HOSTS="$SSH_DIR/known_hosts"
PIDFILE="$SSH_DIR/sshd.pid"
LOG="$SSH_DIR/sshd.log"
HOST=127.0.0.1

# python_with_paramiko: the project's interpreter (its venv when bootstrap made one).
python_with_paramiko() {
    local py
    for py in "${PYTHON:-}" "$GEARBROKER_VENV/bin/python" python python3; do
        [[ -n "$py" ]] && command -v "$py" >/dev/null && "$py" -c 'import paramiko' 2>/dev/null &&
            { echo "$py"; return 0; }
    done
    gb_die "no python with paramiko: run scripts/bootstrap.sh"
}

current_port() {
    sed -n 's/^Port \([0-9]*\)$/\1/p' "$CONFIG" 2>/dev/null
}

choose_port() {
    local port
    if [[ -n "${GB_SSHD_PORT:-}" ]]; then
        port_in_use "$GB_SSHD_PORT" && gb_die "GB_SSHD_PORT=$GB_SSHD_PORT is already in use"
        echo "$GB_SSHD_PORT"
        return 0
    fi
    for ((port = 2222; port < 2300; port++)); do
        port_in_use "$port" || {
            echo "$port"
            return 0
        }
    done
    free_port
}

make_keys() {
    install -d -m 700 "$SSH_DIR"
    [[ -s "$HOST_KEY" ]] || ssh-keygen -q -t ed25519 -N '' -C gearbroker-test-host -f "$HOST_KEY"
    [[ -s "$CLIENT_KEY" ]] || ssh-keygen -q -t ed25519 -N '' -C gearbroker-test -f "$CLIENT_KEY"
    cp "$CLIENT_KEY.pub" "$AUTHORIZED"
    chmod 600 "$AUTHORIZED"
}

write_config() {
    cat >"$CONFIG" <<EOF
# Written by scripts/services/sshd.sh: private test sshd.
Port $1
ListenAddress $HOST
HostKey $HOST_KEY
PidFile $PIDFILE
AuthorizedKeysFile $AUTHORIZED
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
X11Forwarding no
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
    printf '[%s]:%s %s\n' "$HOST" "$1" "$(cut -d' ' -f1,2 "$HOST_KEY.pub")" >"$KNOWN_HOSTS"
}

check_login() {
    "$(python_with_paramiko)" - "$HOST" "$1" "$CLIENT_KEY" "$KNOWN_HOSTS" <<'PY'
import sys

import paramiko

host, port, key, known_hosts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
client = paramiko.SSHClient()
client.load_host_keys(known_hosts)
client.set_missing_host_key_policy(paramiko.RejectPolicy())
client.connect(host, port=port, username="root", key_filename=key, look_for_keys=False,
               allow_agent=False, timeout=10)
_, stdout, _ = client.exec_command("echo ok")
out = stdout.read().decode().strip()
client.close()
sys.exit(0 if out == "ok" else f"ssh `echo ok` printed {out!r}")
PY
}

cmd_start() {
    local port
    apt_install openssh-server
    [[ -x /usr/sbin/sshd ]] || gb_die "/usr/sbin/sshd missing after installing openssh-server"
    make_keys
    if pid_alive "$PIDFILE"; then
        port="$(current_port)"
        gb_log "sshd already running on port $port"
    else
        port="$(choose_port)"
        write_config "$port"
        install -d -m 755 /run/sshd
        /usr/sbin/sshd -t -f "$CONFIG" || gb_die "invalid $CONFIG"
        /usr/sbin/sshd -f "$CONFIG" -E "$LOG"
        wait_for -t 15 port_in_use "$port" || gb_die "sshd does not listen on $port (log: $LOG)"
    fi
    check_login "$port" || gb_die "paramiko login to $HOST:$port failed (log: $LOG)"
    write_env sshd GEARBROKER_TEST_SSH_HOST="$HOST" GEARBROKER_TEST_SSH_PORT="$port" \
        GEARBROKER_TEST_SSH_USER=root GEARBROKER_TEST_SSH_KEY="$CLIENT_KEY" \
        GEARBROKER_TEST_SSH_KNOWN_HOSTS="$KNOWN_HOSTS"
    gb_log "sshd on $HOST:$port; source $GB_SERVICES_DIR/sshd.env"
}

cmd_stop() {
    if pid_alive "$PIDFILE"; then
        kill_pidfile "$PIDFILE" 10
        gb_log "sshd stopped"
    else
        rm -f "$PIDFILE"
        gb_log "sshd is not running"
    fi
    remove_env sshd
}

cmd_status() {
    if pid_alive "$PIDFILE"; then
        echo "running: root@$HOST:$(current_port) (key $CLIENT_KEY)"
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
