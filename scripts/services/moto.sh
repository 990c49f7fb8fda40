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
# status  prints the port and exits 0 when running, exits 3 when not.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=scripts/services/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/services/lib_extra.sh
source "$here/lib_extra.sh"
# shellcheck source=scripts/services/lib_emulator.sh
source "$here/lib_emulator.sh"

moto_binary() {
    if [[ -x "$GEARBROKER_VENV/bin/moto_server" ]]; then
        echo "$GEARBROKER_VENV/bin/moto_server"
    elif command -v moto_server >/dev/null; then
        command -v moto_server
    else
        gb_die "moto_server not found: run scripts/bootstrap.sh (installs moto[server])"
    fi
}

case "${1:-}" in
    start)
        emu_start moto "" "$(moto_binary)" -H 127.0.0.1 -p "{port}"
        port="$(emu_port moto)"
        write_env moto \
            "GEARBROKER_TEST_S3_ENDPOINT=http://127.0.0.1:$port" \
            AWS_ACCESS_KEY_ID=testing \
            AWS_SECRET_ACCESS_KEY=testing \
            AWS_DEFAULT_REGION=us-east-1
        gb_log "moto S3 on http://127.0.0.1:$port; source $GB_SERVICES_DIR/moto.env"
        ;;
    stop)
        emu_stop moto
        remove_env moto
        ;;
    status) emu_status moto ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
