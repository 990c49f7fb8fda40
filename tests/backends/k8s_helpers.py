"""Shared pieces of the Kubernetes backend tests: tasks in job folders on the "PVC", waits."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from backends.base import Backend, TaskStatus
from backends.kubernetes import KubernetesSiteConfig
from broker.task import GEAR_ROOT, ContainerSpec, Mount, Resources, TaskSpec
from tests.fixtures.engines import BUSYBOX_IMAGE

CLAIM = "gb-shared"
#: The pods' user: 1000 when the tests run as root, else the tester (who owns the folders).
POD_UID = 1000 if os.getuid() == 0 else os.getuid()
_ids = itertools.count(1)


def next_id() -> int:
    return next(_ids)


def site_config(root: Path, kubeconfig: Path | None = None, **extra: Any) -> KubernetesSiteConfig:
    section: dict[str, Any] = {
        "pvc_name": CLAIM,
        "pvc_root": str(root),
        "run_as_user": POD_UID,
        "run_as_group": POD_UID,
        "retry_backoff_s": 0.05,
        **extra,
    }
    if kubeconfig is not None:
        section["kubeconfig"] = str(kubeconfig)
    return KubernetesSiteConfig.from_mapping(section)


def make_task(
    root: Path,
    script: str,
    *,
    job_id: int | None = None,
    resources: Resources | None = None,
    image: str = BUSYBOX_IMAGE,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> TaskSpec:
    """A task running ``sh -c script`` in /flywheel/v0 with a writable output folder."""
    job_id = next_id() if job_id is None else job_id
    job_dir = root / "jobs" / f"{job_id}-1"
    for sub in ("v0/output", "logs"):
        (job_dir / sub).mkdir(parents=True, exist_ok=True)
    (job_dir / "v0" / "config.json").write_text('{"config": {}}')
    if os.getuid() == 0:
        os.chown(job_dir / "v0" / "output", POD_UID, POD_UID)
    container = ContainerSpec(
        name=f"gb-job-{job_id}-1",
        image=image,
        argv=["sh", "-c", script],
        mounts=[
            Mount(str(job_dir / "v0" / "output"), f"{GEAR_ROOT}/output", read_only=False),
            Mount(str(job_dir / "v0" / "config.json"), f"{GEAR_ROOT}/config.json"),
        ],
        env=dict(env or {}),
        user=f"{POD_UID}:{POD_UID}",
        resources=resources or Resources(cpus=0.5),
    )
    return TaskSpec(
        job_id=job_id,
        attempt=1,
        job_dir=str(job_dir),
        container=container,
        labels=dict(labels or {"gear": "test-gear:1.0", "user": "tester"}),
    )


def all_terminal(statuses: list[TaskStatus]) -> bool:
    return all(status.state.terminal for status in statuses)


def wait_for(
    backend: Backend,
    ids: Sequence[str],
    until: Callable[[list[TaskStatus]], bool] = all_terminal,
    timeout: float = 90.0,
    poll: float = 0.1,
) -> list[TaskStatus]:
    """Poll ``status`` until ``until`` holds; AssertionError with the last answer on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = backend.status(ids)
        if until(statuses):
            return statuses
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; last statuses: {statuses}")
        time.sleep(poll)


def log_text(task: TaskSpec) -> str:
    return (Path(task.job_dir) / "logs" / "output.log").read_text()
