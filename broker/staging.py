"""Turning a pending job into a staged job folder and a TaskSpec.

Layout of a job folder (``<work_dir>/<job id>-<attempt>``)::

    v0/input/<input>/<file>   hard links to the (read-only) blobs, mounted read-only
    v0/output/  v0/work/      writable by the user the container runs as
    v0/config.json  v0/manifest.json
    logs/output.log           the container's stdout+stderr (written by the backend)

Inputs, config and manifest are mounted one by one (not all of /flywheel/v0), so the gear's
own files in the image (``/flywheel/v0/run`` ...) stay visible.
"""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from broker.jobs import input_file
from broker.task import GEAR_ROOT, ContainerSpec, Mount, Resources, TaskSpec
from catalog.blobstore import BlobStore
from catalog.errors import InvalidInputError
from catalog.models import Container, Gear, Job
from gearspec.manifest import Manifest
from gearspec.staging import Destination, gear_command, gear_environment, stage_run

DEFAULT_CPUS = 1.0


@dataclass(frozen=True)
class RunAs:
    """The host identity a job's container runs as (owner of its outputs)."""

    uid: int
    gid: int

    @property
    def spec(self) -> str:
        return f"{self.uid}:{self.gid}"


def run_as(username: str) -> RunAs:
    """The OS account of ``username`` when it exists here, else the broker's own identity."""
    try:
        entry = pwd.getpwnam(username)
    except KeyError:
        return RunAs(os.getuid(), os.getgid())
    if os.getuid() != 0 and entry.pw_uid != os.getuid():
        return RunAs(os.getuid(), os.getgid())  # only root can act for others
    return RunAs(entry.pw_uid, entry.pw_gid)


def job_dir(work_dir: Path, job: Job) -> Path:
    return work_dir / f"{job.id}-{job.attempt}"


def resources_for(manifest: Manifest, job: Job) -> Resources:
    """The manifest's ``custom.gearbroker`` requests, with per-job overrides (e.g. OOM retry)."""
    req = manifest.resources
    memory_mb = req.memory_bytes // (1024 * 1024) if req.memory_bytes else None
    override = job.options.get("memory_mb")
    if isinstance(override, int) and override > 0:
        memory_mb = override
    return Resources(
        cpus=float(req.cpus) if req.cpus else DEFAULT_CPUS,
        memory_mb=memory_mb,
        gpus=int(req.gpus or 0),
        walltime_s=int(req.walltime_seconds) if req.walltime_seconds else None,
        disk_mb=req.disk_bytes // (1024 * 1024) if req.disk_bytes else None,
    )


def stage_job(
    job: Job,
    gear: Gear,
    manifest: Manifest,
    destination: Container,
    blobs: BlobStore,
    work_dir: Path,
) -> TaskSpec:
    """Stage ``job``'s folder (replacing a half-staged one) and describe its container run."""
    folder = job_dir(work_dir, job)
    if folder.exists():
        shutil.rmtree(folder)
    cache = folder / "cache"
    inputs = []
    for record in job.inputs.values():
        source = blobs.local_path(record["sha256"])
        if source is None:
            source = cache / record["sha256"]
            blobs.fetch_to(record["sha256"], source, link=False)
        inputs.append(input_file(record, source))
    v0 = folder / "v0"
    staged = stage_run(
        manifest,
        job.config,
        inputs,
        Destination(type=destination.level, id=str(destination.id)),
        v0,
        job={"id": str(job.id), "attempt": job.attempt},
        link=True,
    )
    (folder / "logs").mkdir()
    owner = run_as(job.created_by)
    for writable in (staged.output_dir, staged.work_dir, folder / "logs"):
        if os.getuid() == 0 and owner.uid != 0:
            os.chown(writable, owner.uid, owner.gid)
        writable.chmod(0o770)
    task = task_for(job, gear, manifest, folder, staged.command, staged.environment)
    task.write(folder / "task.json")
    return task


def task_for(
    job: Job,
    gear: Gear,
    manifest: Manifest,
    folder: Path,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> TaskSpec:
    """The TaskSpec of ``job`` staged (or to be staged) in ``folder``; no file is touched."""
    image = gear.image or manifest.image
    if not image:
        raise InvalidInputError(f"gear {gear.name}:{gear.version} has no container image")
    v0 = folder / "v0"
    mounts = [
        Mount(str(v0 / "input"), f"{GEAR_ROOT}/input", read_only=True),
        Mount(str(v0 / "output"), f"{GEAR_ROOT}/output", read_only=False),
        Mount(str(v0 / "work"), f"{GEAR_ROOT}/work", read_only=False),
        Mount(str(v0 / "config.json"), f"{GEAR_ROOT}/config.json", read_only=True),
        Mount(str(v0 / "manifest.json"), f"{GEAR_ROOT}/manifest.json", read_only=True),
    ]
    container = ContainerSpec(
        name=f"gb-job-{job.id}-{job.attempt}",
        image=image,
        argv=command or gear_command(manifest),
        mounts=mounts,
        env=env or gear_environment(manifest),
        workdir=str(GEAR_ROOT),
        user=run_as(job.created_by).spec,
        network="networking" in manifest.capabilities,
        resources=resources_for(manifest, job),
    )
    return TaskSpec(
        job_id=job.id,
        attempt=job.attempt,
        job_dir=str(folder),
        container=container,
        labels={"gear": f"{gear.name}:{gear.version}", "user": job.created_by},
    )
