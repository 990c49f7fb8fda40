"""The local backend driving real runtimes: bubblewrap with a rootfs, and podman."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.base import BackendState
from backends.local.backend import LocalBackend
from broker.runtimes import make_runtime
from broker.task import ContainerSpec, Mount, TaskSpec
from tests.backends.local_helpers import processes_with, terminal, wait_file, wait_for
from tests.fixtures.engines import ContainerEngine

PODMAN_OPTIONS = {"stop_timeout_s": 1}


@pytest.fixture(scope="module")
def backend() -> Iterator[LocalBackend]:
    local = LocalBackend(runtime_options={"podman": PODMAN_OPTIONS})
    yield local
    local.close()


def gear_task(job_dir: Path, image: str, script: str) -> TaskSpec:
    """A task running ``script`` with the job's v0 folder mounted at /flywheel/v0."""
    v0 = job_dir / "v0"
    (v0 / "output").mkdir(parents=True)
    return TaskSpec(
        job_id=1,
        attempt=1,
        job_dir=str(job_dir),
        container=ContainerSpec(
            name=f"gbtest-{uuid.uuid4().hex[:12]}",
            image=image,
            argv=["sh", "-c", script],
            mounts=[Mount(str(v0), "/flywheel/v0", read_only=False)],
        ),
    )


def podman_names(engine: ContainerEngine, name: str) -> str:
    done = subprocess.run(
        [engine.binary, "ps", "-a", "--filter", f"name={name}", "--format", "{{.Names}}"],
        env=dict(engine.env),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_bwrap_task_completes_and_writes_output(
    backend: LocalBackend, bwrap_rootfs: Path, tmp_path: Path
) -> None:
    task = gear_task(tmp_path / "job", f"rootfs:{bwrap_rootfs}", "echo hi > output/x; echo done")
    [status] = terminal(backend, [backend.submit(task, make_runtime("bwrap"))])
    assert status.state is BackendState.COMPLETED
    assert (tmp_path / "job" / "v0" / "output" / "x").read_text() == "hi\n"
    assert (tmp_path / "job" / "logs" / "output.log").read_text() == "done\n"


def test_bwrap_exit_code_and_cancel(
    backend: LocalBackend, bwrap_rootfs: Path, tmp_path: Path
) -> None:
    image = f"rootfs:{bwrap_rootfs}"
    runtime = make_runtime("bwrap")
    failed = backend.submit(gear_task(tmp_path / "a", image, "exit 5"), runtime)
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}"
    sleeper = backend.submit(gear_task(tmp_path / "b", image, f"sleep {marker}"), runtime)
    wait_for(backend, [sleeper], {BackendState.RUNNING})
    assert processes_with(f"sleep {marker}")
    assert backend.cancel([sleeper]) == [True]
    statuses = terminal(backend, [failed, sleeper])
    assert (statuses[0].state, statuses[0].exit_code) == (BackendState.FAILED, 5)
    assert statuses[1].state is BackendState.CANCELLED
    assert processes_with(f"sleep {marker}") == []


@pytest.mark.podman
def test_podman_task_completes_with_exit_code(
    backend: LocalBackend, podman_engine: ContainerEngine, tmp_path: Path
) -> None:
    runtime = make_runtime("podman", **PODMAN_OPTIONS)
    ok = gear_task(tmp_path / "a", podman_engine.busybox_image, "echo hi > output/x")
    bad = gear_task(tmp_path / "b", podman_engine.busybox_image, "echo nope >&2; exit 7")
    statuses = terminal(backend, [backend.submit(ok, runtime), backend.submit(bad, runtime)], 90)
    assert [(s.state, s.exit_code) for s in statuses] == [
        (BackendState.COMPLETED, 0),
        (BackendState.FAILED, 7),
    ]
    assert statuses[1].message is not None and "nope" in statuses[1].message
    assert (tmp_path / "a" / "v0" / "output" / "x").read_text() == "hi\n"
    for task in (ok, bad):
        assert podman_names(podman_engine, task.container.name) == ""


@pytest.mark.podman
def test_podman_missing_image_fails_with_runtime_error(
    backend: LocalBackend, podman_engine: ContainerEngine, tmp_path: Path
) -> None:
    runtime = make_runtime("podman", **PODMAN_OPTIONS)
    task = gear_task(tmp_path / "a", "localhost/gearbroker/absent:0", "true")
    [status] = terminal(backend, [backend.submit(task, runtime)], 90)
    assert status.state is BackendState.FAILED
    assert status.message is not None and "absent" in status.message


@pytest.mark.podman
def test_podman_cancel_stops_and_removes_the_container(
    backend: LocalBackend, podman_engine: ContainerEngine, tmp_path: Path
) -> None:
    runtime = make_runtime("podman", **PODMAN_OPTIONS)
    task = gear_task(tmp_path / "a", podman_engine.busybox_image, "echo up; sleep 600")
    external_id = backend.submit(task, runtime)
    assert wait_file(tmp_path / "a" / "logs" / "output.log", 60) == "up\n"
    [status] = backend.status([external_id])
    assert status.state is BackendState.RUNNING
    assert podman_names(podman_engine, task.container.name) == task.container.name
    assert backend.cancel([external_id]) == [True]
    [status] = terminal(backend, [external_id], 60)
    assert status.state is BackendState.CANCELLED
    assert podman_names(podman_engine, task.container.name) == ""
