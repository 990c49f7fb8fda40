#!/usr/bin/env bash
# Create the project virtualenv and install gearbroker into it (editable).
#
# Usage: scripts/bootstrap.sh [EXTRA...]     (default extras: test dev postgres kubernetes gcs azure)
#
# The venv lives at ${GEARBROKER_VENV:-<repo>/.venv} and is built with the `python3` on PATH,
# which must be Python >= 3.11. On Debian's system Python the missing venv/ensurepip support
# is installed with apt (python3-venv). Re-running is cheap: pip is skipped while the venv's
# stamp file is newer than setup.cfg and pyproject.toml and lists the same extras.
set -euo pipefail

# shellcheck source=scripts/services/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/services/lib.sh"

if (($#)); then
    extras=("$@")
else
    extras=(test dev postgres kubernetes gcs azure)
fi
extras_csv="$(IFS=,; echo "${extras[*]}")"
stamp="$GEARBROKER_VENV/.gearbroker-installed"

command -v python3 >/dev/null || gb_die "python3 not found on PATH (need Python >= 3.11)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    gb_die "python3 is $(python3 -V 2>&1) at $(command -v python3); gearbroker needs Python >= 3.11"

if [[ ! -x "$GEARBROKER_VENV/bin/python" ]]; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        python3_path="$(python3 -c 'import sys; print(sys.executable)')"
        [[ "$python3_path" == /usr/bin/* ]] ||
            gb_die "$python3_path lacks the venv/ensurepip modules; install them for that Python"
        apt_install python3-venv
    fi
    gb_log "creating virtualenv $GEARBROKER_VENV"
    rm -rf "$GEARBROKER_VENV"
    python3 -m venv "$GEARBROKER_VENV"
fi

if [[ -f "$stamp" && "$stamp" -nt "$GB_REPO_ROOT/setup.cfg" &&
    "$stamp" -nt "$GB_REPO_ROOT/pyproject.toml" && "$(cat "$stamp")" == "$extras_csv" ]]; then
    gb_log "up to date: $GEARBROKER_VENV [$extras_csv]"
    exit 0
fi

gb_log "installing gearbroker[$extras_csv] into $GEARBROKER_VENV"
rm -f "$stamp"
"$GEARBROKER_VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$GEARBROKER_VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -e "${GB_REPO_ROOT}[$extras_csv]"
printf '%s\n' "$extras_csv" >"$stamp"
gb_log "done: activate with 'source $GEARBROKER_VENV/bin/activate'"
