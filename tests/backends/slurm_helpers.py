"""Shared pieces of the Slurm backend tests: tasks in job folders, runtimes, waits."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from backends.base import Backend, TaskStatus
from broker.runtimes import make_runtime
from broker.runtimes.base import ContainerRuntime
from broker.task import GEAR_ROOT, ContainerSpec, Mount, Resources, TaskSpec
from broker.transport import Transport
from tests.fixtures.engines import BUSYBOX_IMAGE


def bwrap_runtime(rootfs: Path) -> ContainerRuntime:
    """The real bwrap runtime, with the test image mapped to the unpacked busybox rootfs."""
    return make_runtime("bwrap", images={BUSYBOX_IMAGE: str(rootfs)})


class FakeRuntime(ContainerRuntime):
    """Deterministic argv for golden scripts; ``stop``: also emit stop/remove commands."""

    name: ClassVar[str] = "fake"
    binary = "fakeruntime"

    def __init__(self, stop: bool = False) -> None:
        self.stop = stop

    def argv(self, spec: ContainerSpec) -> list[str]:
        mounts = [f"--mount={m.source}:{m.target}" for m in spec.mounts]
        return ["fakeruntime", "run", f"--name={spec.name}", *mounts, spec.image, *spec.argv]

    def stop_argv(self, spec: ContainerSpec) -> list[str] | None:
        return ["fakeruntime", "stop", spec.name] if self.stop else None

    def remove_argv(self, spec: ContainerSpec) -> list[str] | None:
        return ["fakeruntime", "rm", spec.name] if self.stop else None

    def version(self, transport: Transport) -> str | None:
        return None


def make_task(
    root: Path,
    job_id: int,
    script: str,
    *,
    resources: Resources | None = None,
    create: bool = True,
) -> TaskSpec:
    """A task whose container runs ``sh -c script`` in /flywheel/v0 of ``root/job-<id>``."""
    job_dir = root / f"job-{job_id}"
    if create:
        for sub in ("v0/output", "logs"):
            (job_dir / sub).mkdir(parents=True, exist_ok=True)
    container = ContainerSpec(
        name=f"gb-job-{job_id}-1",
        image=BUSYBOX_IMAGE,
        argv=["sh", "-c", script],
        mounts=[Mount(str(job_dir / "v0"), GEAR_ROOT, read_only=False)],
        resources=resources or Resources(),
    )
    return TaskSpec(job_id=job_id, attempt=1, job_dir=str(job_dir), container=container)


def wait_terminal(
    backend: Backend, ids: Sequence[str], timeout: float = 120.0, interval: float = 0.5
) -> list[TaskStatus]:
    """Poll until every id is terminal; fail with the last statuses after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = backend.status(ids)
        if all(s.state.terminal for s in statuses):
            return statuses
        if time.monotonic() > deadline:
            pending = [s for s in statuses if not s.state.terminal][:5]
            raise AssertionError(f"not finished after {timeout} s: {pending}")
        time.sleep(interval)


def wait_state(
    backend: Backend, external_id: str, wanted: str, timeout: float = 60.0
) -> TaskStatus:
    """Poll one id until its state is ``wanted``."""
    deadline = time.monotonic() + timeout
    while True:
        (status,) = backend.status([external_id])
        if status.state == wanted:
            return status
        if time.monotonic() > deadline or status.state.terminal:
            raise AssertionError(f"{external_id} never reached {wanted}: {status}")
        time.sleep(0.3)
