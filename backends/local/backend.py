"""The local backend: gear containers on Dask distributed, each under a detached supervisor.

By default a thread-based ``LocalCluster`` sized to this machine runs the tasks; given a
``scheduler_address`` the backend uses that Dask cluster (e.g. a lab's multi-node one) as is.
A Dask task (:mod:`backends.local.dasktask`) only has :mod:`backends.local.supervisor`
started and waits for its ``exit.json``;
the supervisor owns the container, so a task outlives the process that submitted it, and
``status`` reads the job folder (plus Dask, when it knows the task), which works after a
restart.  The external id is the absolute job folder of the attempt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import dask
from distributed import Client, Future, LocalCluster, fire_and_forget

from backends.base import Backend, BackendState, TaskStatus
from backends.errors import BackendError
from backends.local import dasktask, jobfiles
from backends.local.jobfiles import ExitRecord
from broker.runtimes.base import ContainerRuntime
from broker.task import TaskSpec
from catalog.errors import ConfigError


def dask_key(task: TaskSpec) -> str:
    """The task's Dask key: its stable name plus a digest of its job folder.

    Dask treats a second submission under a known key as the same task and never runs it, so
    the key must differ for every job folder, even across brokers sharing one scheduler.
    """
    digest = hashlib.sha256(str(Path(task.job_dir).absolute()).encode()).hexdigest()[:12]
    return f"{task.key}-{digest}"


def _machine_memory_mb() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)


class LocalBackend(Backend):
    """Runs tasks on a Dask cluster: a machine-sized LocalCluster, or one at an address.

    ``workers`` and ``max_concurrent`` shape the LocalCluster (threads: at most
    ``max_concurrent`` tasks run at once); ``resources`` overrides the machine's declared
    ``cpus``/``memory_mb``/``gpus``, split evenly between workers.  An external cluster is used
    as it is: tasks ask only for the resources its workers declare.  ``runtime_options`` maps a
    runtime name to the keyword options the supervisor rebuilds that runtime with.
    """

    name = "local"

    def __init__(
        self,
        scheduler_address: str | None = None,
        workers: int | None = None,
        max_concurrent: int | None = None,
        resources: dict[str, float] | None = None,
        runtime_options: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        if scheduler_address and (workers or max_concurrent or resources):
            raise ConfigError(
                "workers, max_concurrent and resources shape the local cluster only; "
                "an external Dask scheduler's workers decide their own"
            )
        self.scheduler_address = scheduler_address
        self.workers = workers or 1
        if max_concurrent is not None and max_concurrent < self.workers:
            raise ConfigError(f"max_concurrent={max_concurrent} is below workers={self.workers}")
        self.max_concurrent = max_concurrent
        cpus = float(os.cpu_count() or 1)
        declared = {"cpus": cpus, "memory_mb": float(_machine_memory_mb()), "gpus": 0.0}
        declared.update(resources or {})
        self._worker_resources = {k: v / self.workers for k, v in declared.items()}
        self.runtime_options = runtime_options or {}
        self._client: Client | None = None
        self._cluster: LocalCluster | None = None
        self._futures: dict[str, Future[Any]] = {}
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._session = uuid.uuid4().hex

    # -- Dask ------------------------------------------------------------------------------

    def _connect(self) -> Client:
        with self._lock:
            if self._client is None:
                if self.scheduler_address:
                    self._client = Client(self.scheduler_address, timeout=30)  # type: ignore[no-untyped-call]
                else:
                    self._cluster = self._start_cluster()
                    self._client = Client(self._cluster)  # type: ignore[no-untyped-call]
            return self._client

    def _start_cluster(self) -> LocalCluster:
        if self.max_concurrent is not None:
            threads = self.max_concurrent // self.workers
        else:
            threads = 4 * int(max(self._worker_resources["cpus"], 1))
        # The workers share this process (and its GIL) with the dispatcher: no statistical
        # profiler sampling every thread's stack 100 times a second for a dashboard.
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            return LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=self.workers,
                threads_per_worker=threads,
                processes=False,
                resources=self._worker_resources,
                dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                silence_logs=logging.ERROR,
            )

    def _restrictions(self, task: TaskSpec, client: Client) -> dict[str, float]:
        """The Dask resources ``task`` asks for, checked against what workers can offer."""
        res = task.resources
        wanted = {"cpus": res.cpus, "memory_mb": float(res.memory_mb or 0), "gpus": float(res.gpus)}
        wanted = {k: v for k, v in wanted.items() if v > 0}
        if self.scheduler_address is None:
            for key, amount in wanted.items():
                offered = self._worker_resources.get(key, 0.0)
                if amount > offered:
                    raise BackendError(
                        f"{task.key} needs {key}={amount:g} but a local worker offers {offered:g}"
                    )
            return wanted
        workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
        declared = {name for worker in workers for name in worker.get("resources", {})}
        return {k: v for k, v in wanted.items() if k in declared}

    # -- Backend ---------------------------------------------------------------------------

    def submit(self, task: TaskSpec, runtime: ContainerRuntime) -> str:
        """Write task.json and runtime.json into the job folder and queue the supervisor."""
        job_dir = Path(task.job_dir).absolute()
        external_id = str(job_dir)
        (job_dir / "logs").mkdir(parents=True, exist_ok=True)
        for name in (jobfiles.PID_FILE, jobfiles.EXIT_FILE):
            if (job_dir / name).exists():
                raise BackendError(f"{job_dir} already holds a submitted task ({name})")
        task.write(job_dir / jobfiles.TASK_FILE)
        options = self.runtime_options.get(runtime.name, {})
        record = jobfiles.runtime_record(runtime, options)
        (job_dir / jobfiles.RUNTIME_FILE).write_text(json.dumps(record, sort_keys=True))
        client = self._connect()
        future = client.submit(
            dasktask.run_supervised,
            external_id,
            self._session if self._cluster is not None else "",
            key=dask_key(task),
            pure=False,
            resources=self._restrictions(task, client),
        )
        fire_and_forget(future)  # type: ignore[no-untyped-call]
        future.add_done_callback(self._task_ended)  # type: ignore[no-untyped-call]
        with self._lock:
            self._futures[external_id] = future
        return external_id

    def notify_changes(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (from a Dask thread; it must be quick) whenever a task this
        backend submitted ends, so a dispatcher can poll at once instead of on its timer."""
        with self._lock:
            self._listeners.append(listener)

    def _task_ended(self, future: Future[Any]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def status(self, ids: Sequence[str]) -> list[TaskStatus]:
        """Statuses from the job folders first, then from Dask futures and the scheduler."""
        statuses = [self._status(external_id) for external_id in ids]
        unknown = [s.external_id for s in statuses if s.message == jobfiles.LOST_MESSAGE]
        queued = self._scheduler_states(unknown)
        return [
            TaskStatus(s.external_id, queued[s.external_id]) if s.external_id in queued else s
            for s in statuses
        ]

    def _status(self, external_id: str) -> TaskStatus:
        job_dir = Path(external_id)
        record = jobfiles.read_exit(job_dir)
        if record is not None:
            with self._lock:
                self._futures.pop(external_id, None)
            return record.status(external_id)
        owner = jobfiles.read_owner(job_dir)
        if owner is not None:
            if jobfiles.owner_alive(job_dir, owner):
                started = datetime.fromisoformat(owner.started)
                return TaskStatus(external_id, BackendState.RUNNING, started=started)
            return self._lost(job_dir, f"supervisor {owner.pid} on {owner.host} died")
        with self._lock:
            future = self._futures.get(external_id)
        if future is None:
            return self._lost(job_dir, None)
        if future.status == "pending":
            return TaskStatus(external_id, BackendState.PENDING)
        if future.status == "cancelled":
            return TaskStatus(external_id, BackendState.CANCELLED, message="cancelled in Dask")
        if future.status == "error":
            exc = future.exception(timeout=5)  # type: ignore[no-untyped-call]
            state = BackendState.NODE_FAIL if type(exc).__name__ == "KilledWorker" else None
            return TaskStatus(
                external_id, state or BackendState.FAILED, message=f"{type(exc).__name__}: {exc}"
            )
        return self._lost(job_dir, None)

    def _lost(self, job_dir: Path, why: str | None) -> TaskStatus:
        """MISSING, unless the exit record appeared meanwhile (the supervisor just finished)."""
        record = jobfiles.read_exit(job_dir)
        if record is not None:
            return record.status(str(job_dir))
        message = f"{why}: {jobfiles.LOST_MESSAGE}" if why else jobfiles.LOST_MESSAGE
        return TaskStatus(str(job_dir), BackendState.MISSING, message=message)

    def _scheduler_states(self, ids: Sequence[str]) -> dict[str, BackendState]:
        """PENDING/FAILED for tasks an external scheduler still holds (after a restart)."""
        if not ids or self.scheduler_address is None:
            return {}
        keys: dict[str, str] = {}
        for external_id in ids:
            with contextlib.suppress(OSError, ValueError, KeyError):
                path = Path(external_id) / jobfiles.TASK_FILE
                keys[dask_key(TaskSpec.from_json(path.read_text()))] = external_id
        if not keys:
            return {}
        states: dict[str, str] = self._connect().run_on_scheduler(  # type: ignore[no-untyped-call]
            lambda keys, dask_scheduler: {
                k: dask_scheduler.tasks[k].state for k in keys if k in dask_scheduler.tasks
            },
            list(keys),
        )
        return {
            keys[key]: BackendState.FAILED if state == "erred" else BackendState.PENDING
            for key, state in states.items()
        }

    def cancel(self, ids: Sequence[str]) -> list[bool]:
        """Mark each task cancelled; stop its supervisor, or record it cancelled if not started."""
        return [self._cancel(external_id) for external_id in ids]

    def _cancel(self, external_id: str) -> bool:
        job_dir = Path(external_id)
        if jobfiles.read_exit(job_dir) is not None or not (job_dir / jobfiles.TASK_FILE).exists():
            return False
        (job_dir / jobfiles.CANCEL_FILE).touch()
        owner = jobfiles.read_owner(job_dir)
        if owner is not None:
            if not jobfiles.owner_alive(job_dir, owner):
                return False
            if owner.host == socket.gethostname():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(owner.pid, signal.SIGTERM)
            return True
        record = ExitRecord(
            BackendState.CANCELLED, None, "cancelled before it started", None, jobfiles.utc_now()
        )
        jobfiles.write_exit(job_dir, record)
        with self._lock:
            future = self._futures.pop(external_id, None)
        if future is not None and self._client is not None:
            self._client.cancel([future], force=True)  # type: ignore[no-untyped-call]
        return True

    def render(self, task: TaskSpec, runtime: ContainerRuntime) -> str:
        res = task.resources
        if self.scheduler_address:
            where = f"Dask scheduler {self.scheduler_address}"
        else:
            threads = self.max_concurrent or "machine-sized"
            where = f"local Dask cluster ({self.workers} worker(s), concurrency {threads})"
        lines = [
            f"backend: local, {where}",
            f"task: {task.key}",
            f"job dir: {Path(task.job_dir).absolute()}",
            f"resources: cpus={res.cpus:g} memory_mb={res.memory_mb} gpus={res.gpus} "
            f"walltime_s={res.walltime_s}",
            f"log: {self.log_paths('', task)[0]} (capped at {task.log_limit_bytes} bytes)",
            f"runtime: {runtime.name}",
            f"command: {shlex.join(runtime.argv(task.container))}",
        ]
        stop = runtime.stop_argv(task.container)
        if stop is not None:
            lines.append(f"stop: {shlex.join(stop)}")
        return "\n".join(lines)

    def find(self, job_dir: str, key: str) -> str | None:
        """The job folder's id when a supervisor claimed it or left an exit record."""
        folder = Path(job_dir).absolute()
        if jobfiles.read_exit(folder) is not None or jobfiles.read_owner(folder) is not None:
            return str(folder)
        return None

    def log_paths(self, external_id: str, task: TaskSpec) -> list[str]:
        return [str(Path(task.job_dir).absolute() / jobfiles.LOG_FILE)]

    def close(self) -> None:
        with self._lock:
            client, cluster = self._client, self._cluster
            self._client = self._cluster = None
            self._futures.clear()
        dasktask.closing.add(self._session)
        if client is not None:
            client.close()  # type: ignore[no-untyped-call]
        if cluster is not None:
            cluster.close()
