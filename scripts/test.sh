#!/usr/bin/env bash
# The whole test suite: installs and starts every service the tests need, lints, runs pytest.
# Usage: bash scripts/test.sh [PYTEST_ARGS...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/services/lib.sh
source "$here/services/lib.sh"
cd "$GB_REPO_ROOT"

bash "$here/bootstrap.sh" test dev postgres kubernetes gcs azure
for service in postgres moto gcs azurite podman docker slurm sshd; do
    bash "$here/services/$service.sh" start
done
bash "$here/images/build-test-images.sh" all
apt_install curl bubblewrap  # the Kubernetes S3-staging test image copies the host's curl
for env_file in "$GB_SERVICES_DIR"/*.env; do
    # shellcheck disable=SC1090
    source "$env_file"
done
export PATH="$GEARBROKER_VENV/bin:$PATH"

gb_log "lint: ruff + mypy"
ruff check .
ruff format --check .
mypy

gb_log "pytest"
exec python -m pytest -q -p no:cacheprovider "$@"
