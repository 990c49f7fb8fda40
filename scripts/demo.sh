#!/usr/bin/env bash
# The main job end to end on the embedded default: SQLite catalog, local blob store, local
# Dask backend, and the bundled dcm2niix gear run with bubblewrap from an image built offline
# from Debian packages.
# Usage: bash scripts/demo.sh [WORKDIR]     (default ./gearbroker-demo; recreated each run)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/services/lib.sh
source "$here/services/lib.sh"
bash "$here/bootstrap.sh" test dev postgres kubernetes gcs azure
apt_install bubblewrap
bash "$here/images/build-test-images.sh" rootfs
exec "$GEARBROKER_VENV/bin/gearbroker" demo --workdir "${1:-$GB_REPO_ROOT/gearbroker-demo}" \
    --runtime bwrap --gear-rootfs "$GB_SERVICES_DIR/rootfs/dcm2niix"
