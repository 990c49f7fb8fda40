"""The backend interface: where a TaskSpec runs (local Dask, Slurm, Kubernetes).

Modelled on Parsl's providers: batched ``status(ids)``, and an explicit state enum that keeps
TIMEOUT, OUT_OF_MEMORY, NODE_FAIL and MISSING apart from FAILED, so the broker can decide on
retries and tell users why a job ended.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from broker.runtimes.base import ContainerRuntime
from broker.task import TaskSpec


class BackendState(enum.StrEnum):
    """A task's state as its backend reports it."""

    PENDING = "pending"  # accepted, waiting for resources
    RUNNING = "running"
    COMPLETED = "completed"  # exit code 0
    FAILED = "failed"  # non-zero exit code
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"  # walltime exceeded
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAIL = "node_fail"  # the machine or worker running it died
    MISSING = "missing"  # the backend no longer knows the task

    @property
    def terminal(self) -> bool:
        return self not in (BackendState.PENDING, BackendState.RUNNING)


@dataclass(frozen=True)
class TaskStatus:
    """One task's status; ``message`` explains non-success in the backend's words."""

    external_id: str
    state: BackendState
    exit_code: int | None = None
    message: str | None = None
    started: datetime | None = None
    finished: datetime | None = None


class Backend(ABC):
    """Submits tasks, reports their status in batches, cancels them."""

    name: ClassVar[str]
    #: Runtime names this backend can drive; None means any.
    runtimes: ClassVar[frozenset[str] | None] = None
    #: The runtime a site configured for this backend (used when neither the job nor the
    #: gear names one); None: the broker's ``broker.runtime`` setting.
    default_runtime: str | None = None

    @abstractmethod
    def submit(self, task: TaskSpec, runtime: ContainerRuntime) -> str:
        """Start ``task`` with ``runtime``; returns the backend's id for it."""

    def submit_many(self, tasks: Sequence[TaskSpec], runtime: ContainerRuntime) -> list[str]:
        """Submit several tasks of one gear (backends with arrays override this)."""
        return [self.submit(task, runtime) for task in tasks]

    @abstractmethod
    def status(self, ids: Sequence[str]) -> list[TaskStatus]:
        """Statuses of ``ids`` in one batched call, in the same order."""

    @abstractmethod
    def cancel(self, ids: Sequence[str]) -> list[bool]:
        """Stop the tasks (really stop their containers); True where a cancel was issued."""

    @abstractmethod
    def render(self, task: TaskSpec, runtime: ContainerRuntime) -> str:
        """What would be submitted, for a human to inspect."""

    def find(self, job_dir: str, key: str) -> str | None:
        """The id of an already-submitted task for this attempt (``key`` is its name), or None.

        Used after a dispatcher died between submitting and recording the id, so that the
        task is adopted instead of being submitted twice.
        """
        return None

    def log_paths(self, external_id: str, task: TaskSpec) -> list[str]:
        """Host paths of the task's log files while it runs (for ``jobs logs --follow``)."""
        return [f"{task.job_dir}/logs/output.log"]

    def notify_changes(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when a task may have changed state (backends that can tell
        override this so the dispatcher wakes at once instead of at the next poll)."""

    def close(self) -> None:
        """Release clients and connections."""
