#!/usr/bin/env bash
# Background Google Cloud Storage emulator (gcp-storage-emulator, from the test extra) for the
# tests of gs:// ingest sources.
#
# Usage: scripts/services/gcs.sh start|stop|status
#
# start   runs $GEARBROKER_VENV/bin/gcp-storage-emulator in memory on 127.0.0.1 (port
#         GB_GCS_PORT or a free one) and writes $GB_SERVICES_DIR/gcs.env exporting
#         GEARBROKER_TEST_GCS_ENDPOINT.  Running it again on a live server only rewrites it.
# stop    stops the server and removes gcs.env.
# status  prints the port and exits 0 when running, exits 3 when not.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=scripts/services/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/services/lib_extra.sh
source "$here/lib_extra.sh"
# shellcheck source=scripts/services/lib_emulator.sh
source "$here/lib_emulator.sh"

binary="$GEARBROKER_VENV/bin/gcp-storage-emulator"

case "${1:-}" in
    start)
        [[ -x "$binary" ]] || gb_die "$binary not found: run scripts/bootstrap.sh (test extra)"
        emu_start gcs storage/v1/b "$binary" start --host 127.0.0.1 --port "{port}" --in-memory
        write_env gcs "GEARBROKER_TEST_GCS_ENDPOINT=http://127.0.0.1:$(emu_port gcs)"
        gb_log "GCS emulator on http://127.0.0.1:$(emu_port gcs); source $GB_SERVICES_DIR/gcs.env"
        ;;
    stop)
        emu_stop gcs
        remove_env gcs
        ;;
    status) emu_status gcs ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
