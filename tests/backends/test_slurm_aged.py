"""A job whose record has aged out of squeue (MinJobAge) is looked up again, then MISSING.

The module restarts Slurm with MinJobAge=10 through scripts/services/slurm.sh and restores the
previous value afterwards (a restart cancels every job, so this is marked slow).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.base import BackendState
from backends.slurm import SlurmBackend
from tests.backends.slurm_helpers import bwrap_runtime, make_task, wait_terminal
from tests.backends.test_slurm_live import site_config
from tests.fixtures.engines import REPO_ROOT, SlurmCluster, SshLogin

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SLURM_SH = REPO_ROOT / "scripts" / "services" / "slurm.sh"
SHORT_AGE = 10


def _start_slurm(min_job_age: int) -> None:
    env = {**os.environ, "GB_SLURM_MINJOBAGE": str(min_job_age)}
    done = subprocess.run(
        ["bash", str(SLURM_SH), "start"], env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        pytest.fail(f"slurm.sh start (MinJobAge={min_job_age}) failed:\n{done.stderr}")


@pytest.fixture(scope="module")
def short_lived_slurm(slurm_cluster: SlurmCluster) -> Iterator[int]:
    """Slurm with MinJobAge=10 for this module; the previous MinJobAge comes back afterwards."""
    if slurm_cluster.min_job_age != SHORT_AGE:
        _start_slurm(SHORT_AGE)
    try:
        yield SHORT_AGE
    finally:
        if slurm_cluster.min_job_age != SHORT_AGE:
            _start_slurm(slurm_cluster.min_job_age)


def _squeue_knows(job_id: str) -> bool:
    done = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id], capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and bool(done.stdout.strip())


def test_aged_out_job_is_reported_missing(
    short_lived_slurm: int, ssh_login: SshLogin, bwrap_rootfs: Path, tmp_path: Path
) -> None:
    runtime = bwrap_runtime(bwrap_rootfs)
    local = SlurmBackend(site_config(tmp_path))
    remote = SlurmBackend(site_config(tmp_path, ssh_login))
    try:
        tasks = [make_task(tmp_path, i, "echo done") for i in range(3)]
        single = local.submit(tasks[0], runtime)
        array = remote.submit_many(tasks[1:], runtime)
        for backend, ids in ((local, [single]), (remote, array)):
            statuses = wait_terminal(backend, ids)
            assert {s.state for s in statuses} == {BackendState.COMPLETED}
        deadline = time.monotonic() + 6 * short_lived_slurm
        while any(_squeue_knows(i) for i in [single, *array]):
            assert time.monotonic() < deadline, "Slurm kept the finished jobs"
            time.sleep(1)
        for backend, ids in ((local, [single]), (remote, array)):
            for status in backend.status(ids):
                assert status.state is BackendState.MISSING
                assert status.message is not None
                assert f"no longer knows job {status.external_id}" in status.message
                assert "outcome is unknown" in status.message
    finally:
        local.close()
        remote.close()
