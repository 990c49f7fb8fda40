#!/usr/bin/env bash
# Background Azure Blob Storage emulator (Azurite, from the npm registry) for the tests of
# az:// ingest sources.
#
# Usage: scripts/services/azurite.sh start|stop|status
#
# start   installs Node.js and npm (Debian) when missing and Azurite $AZURITE_VERSION into
#         $GB_SERVICES_DIR/azurite-pkg, runs its blob service in memory on 127.0.0.1 (port
#         GB_AZURITE_PORT or a free one) and writes $GB_SERVICES_DIR/azurite.env exporting
#         GEARBROKER_TEST_AZURE_CONNECTION_STRING (Azurite's documented development account).
# stop    stops the server and removes azurite.env.
# status  prints the port and exits 0 when running, exits 3 when not.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=scripts/services/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/services/lib_extra.sh
source "$here/lib_extra.sh"
# shellcheck source=scripts/services/lib_emulator.sh
source "$here/lib_emulator.sh"

# 3.34 is the last release that runs on Debian 12's Node.js 18 (later ones need Node 22).
AZURITE_VERSION=3.34.0
PKG="$GB_SERVICES_DIR/azurite-pkg"
BINARY="$PKG/node_modules/.bin/azurite-blob"
ACCOUNT=devstoreaccount1
# Azurite's fixed, published development key (not a secret).
KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

install_azurite() {
    [[ -x "$BINARY" && "$(cat "$PKG/.version" 2>/dev/null)" == "$AZURITE_VERSION" ]] && return 0
    command -v npm >/dev/null || apt_install nodejs npm
    gb_log "installing azurite@$AZURITE_VERSION into $PKG"
    mkdir -p "$PKG"
    npm install --prefix "$PKG" --no-audit --no-fund --omit=dev --loglevel=error \
        "azurite@$AZURITE_VERSION" >/dev/null
    echo "$AZURITE_VERSION" >"$PKG/.version"
}

case "${1:-}" in
    start)
        install_azurite
        # Any answer, even 400 to a bare GET, means it listens.
        emu_start azurite "" "$BINARY" --blobHost 127.0.0.1 --blobPort "{port}" \
            --inMemoryPersistence --skipApiVersionCheck --disableTelemetry --silent
        endpoint="http://127.0.0.1:$(emu_port azurite)/$ACCOUNT"
        write_env azurite "GEARBROKER_TEST_AZURE_CONNECTION_STRING=DefaultEndpointsProtocol=http;\
AccountName=$ACCOUNT;AccountKey=$KEY;BlobEndpoint=$endpoint;"
        gb_log "Azurite blob service on $endpoint; source $GB_SERVICES_DIR/azurite.env"
        ;;
    stop)
        emu_stop azurite
        remove_env azurite
        ;;
    status) emu_status azurite ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
