#!/usr/bin/env bash
# The main job end to end on the embedded default (SQLite, local blob store, local Dask).
# Usage: bash scripts/demo.sh [WORKDIR]     (default ./gearbroker-demo; recreated each run)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/bootstrap.sh" test dev postgres kubernetes
# shellcheck source=scripts/services/lib.sh
source "$here/services/lib.sh"
exec "$GEARBROKER_VENV/bin/gearbroker" demo --workdir "${1:-$GB_REPO_ROOT/gearbroker-demo}"
