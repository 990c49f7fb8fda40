"""What the broker hands to a runtime and a backend: one container run, fully described.

A :class:`ContainerSpec` says what to run (image, argv, mounts, env, limits); a runtime turns
it into a command line.  A :class:`TaskSpec` adds where the job's files live and its
scheduling needs; a backend turns it into a submission.  Both serialise to JSON so a task can
be written next to its job folder and re-read by another process.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from catalog.errors import InvalidInputError

#: Mount point of the staged gear folder inside every container (Flywheel's contract).
GEAR_ROOT = "/flywheel/v0"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Resources:
    """What one run needs; None means "no explicit limit"."""

    cpus: float = 1.0
    memory_mb: int | None = None
    gpus: int = 0
    walltime_s: int | None = None
    disk_mb: int | None = None


@dataclass(frozen=True)
class Mount:
    """A host path made visible inside the container."""

    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    """One container run, independent of the runtime that will execute it.

    ``image`` is an image reference (``docker.io/x/y:1``, ``localhost/z:tag``, a ``.sif`` file)
    or, for bwrap, a root-filesystem folder (``rootfs:/path``) or ``host`` to run host tools.
    """

    name: str
    image: str
    argv: list[str]
    mounts: list[Mount] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = GEAR_ROOT
    user: str | None = None
    network: bool = False
    resources: Resources = field(default_factory=Resources)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidInputError(f"invalid container name {self.name!r}")
        if not self.argv:
            raise InvalidInputError("a container needs a command")
        for value in [self.image, *self.argv, *self.env.values(), *self.env.keys()]:
            if "\x00" in value:
                raise InvalidInputError("NUL byte in a container spec value")
        for key in self.env:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise InvalidInputError(f"invalid environment variable name {key!r}")
        for mount in self.mounts:
            if not mount.target.startswith("/") or ".." in mount.target.split("/"):
                raise InvalidInputError(f"invalid mount target {mount.target!r}")


@dataclass(frozen=True)
class TaskSpec:
    """A container run plus the job it belongs to and where its files live on the host.

    ``job_dir`` holds ``v0/`` (mounted at /flywheel/v0), ``logs/`` and the backend's state.
    """

    job_id: int
    attempt: int
    job_dir: str
    container: ContainerSpec
    log_limit_bytes: int = 100 * 1024 * 1024
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """A stable, unique name for this attempt (container names, scheduler job names)."""
        return f"gb-job-{self.job_id}-{self.attempt}"

    @property
    def resources(self) -> Resources:
        return self.container.resources

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TaskSpec:
        return task_from_dict(json.loads(text))

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)


def task_from_dict(data: dict[str, Any]) -> TaskSpec:
    c = dict(data["container"])
    c["mounts"] = [Mount(**m) for m in c.get("mounts", [])]
    c["resources"] = Resources(**c.get("resources", {}))
    return TaskSpec(
        job_id=data["job_id"],
        attempt=data["attempt"],
        job_dir=data["job_dir"],
        container=ContainerSpec(**c),
        log_limit_bytes=data.get("log_limit_bytes", 100 * 1024 * 1024),
        labels=data.get("labels", {}),
    )
