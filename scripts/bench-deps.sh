#!/usr/bin/env bash
# Installs what the benchmarks measure against and the test suite does not need:
# Debian's Orthanc DICOM server, the baseline of benchmarks/ingest.py.  The benchmark starts
# its own Orthanc on a free port; the one the package's init script may start is left alone.
#
# Usage: scripts/bench-deps.sh   (as root; does nothing when everything is installed)
set -euo pipefail

# shellcheck source=scripts/services/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/services/lib.sh"

apt_install orthanc
