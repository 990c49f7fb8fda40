"""The dispatcher: claims pending jobs, stages and submits them, polls, finalizes.

The catalog is the only source of truth.  On PostgreSQL several dispatchers share the work
(``SELECT ... FOR UPDATE SKIP LOCKED``); on SQLite one dispatcher runs at a time, enforced
by an exclusive lock file next to the database (released by the kernel if the process dies).
On start a dispatcher reconciles every non-terminal job with its backend, so a dispatcher
killed mid-run and restarted neither loses a job nor runs one twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import asdict
from pathlib import Path
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from backends.base import Backend, BackendState, TaskStatus
from broker.cache import cache_key, complete_from_cache, find_cached
from broker.claim import ACTIVE, ClaimLimits, claim_jobs
from broker.finalize import finalize_job
from broker.retry import RetrySettings, retry_if_due
from broker.rule_engine import RuleEngine
from broker.runtimes.base import ContainerRuntime
from broker.runtimes.native import NativeRuntime
from broker.staging import job_dir, stage_job
from broker.states import Reason, lock_job, transition
from broker.task import TaskSpec
from broker.transport import LocalTransport
from catalog.catalog import Catalog
from catalog.errors import ConflictError, GearbrokerError
from catalog.models import Gear, Job, JobState
from catalog.tree import get_container
from gearspec.manifest import load_manifest

log = logging.getLogger(__name__)

#: Jobs a scheduler backend may hold at once (it queues and throttles them itself).
REMOTE_IN_FLIGHT = 5000

BackendFactory = Callable[[str], Backend]
RuntimeFactory = Callable[[str | None, str | None], ContainerRuntime]


class DispatcherBusyError(ConflictError):
    """Another dispatcher already serves this SQLite catalog."""


class Dispatcher:
    """One dispatch loop over the catalog's jobs."""

    def __init__(
        self,
        cat: Catalog,
        backends: BackendFactory,
        runtimes: RuntimeFactory,
        work_dir: Path,
        *,
        backend_names: Collection[str] = ("local",),
        poll_interval: float = 2.0,
        max_in_flight: int = 0,
        max_per_user: int = 0,
        max_per_project: int = 0,
        retry: RetrySettings | None = None,
        name: str | None = None,
    ) -> None:
        self.cat = cat
        self._backend_factory = backends
        self._runtime_factory = runtimes
        self.work_dir = work_dir
        self.backend_names = tuple(backend_names)
        self.poll_interval = poll_interval
        local = max_in_flight or (os.cpu_count() or 1) * 4
        self.limits = {
            name: ClaimLimits(
                local if name == "local" else REMOTE_IN_FLIGHT, max_per_user, max_per_project
            )
            for name in self.backend_names
        }
        self.retry = retry or RetrySettings()
        self.rules = RuleEngine(cat)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._digests: dict[tuple[str, str], tuple[float, str | None, str | None]] = {}
        self._backends: dict[str, Backend] = {}
        self._lock_file: IO[str] | None = None
        self._last_poll = 0.0
        #: Set by backends that announce task changes (``notify_changes``): poll at once.
        self._changed = threading.Event()

    # -- lifecycle -------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the SQLite dispatcher lock (no-op on PostgreSQL); DispatcherBusyError if held."""
        if self.cat.db.dialect != "sqlite":
            return
        database = self.cat.db.engine.url.database or "catalog"
        path = Path(f"{database}.dispatcher.lock")
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise DispatcherBusyError(
                "another dispatcher is serving this SQLite catalog (one at a time on SQLite; "
                "use PostgreSQL for several)"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{self.name}\n")
        handle.flush()
        self._lock_file = handle

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            backend = self._backend_factory(name)
            backend.notify_changes(self._changed.set)
            self._backends[name] = backend
        return self._backends[name]

    def serve(
        self,
        stop: threading.Event | None = None,
        only: Collection[int] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Run until ``stop`` is set, or until every job in ``only`` is terminal."""
        self.acquire()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self.reconcile(only)
            while not (stop is not None and stop.is_set()):
                busy = self.step(only)
                if only is not None and self._all_terminal(only):
                    return
                if deadline is not None and time.monotonic() > deadline:
                    return
                self._pause(0.05 if busy else min(self.poll_interval, 0.5), stop)
        finally:
            self.close()

    def _pause(self, seconds: float, stop: threading.Event | None) -> None:
        """Sleep up to ``seconds``; a backend's change notice or ``stop`` ends it early."""
        end = time.monotonic() + seconds
        while not self._changed.is_set() and not (stop is not None and stop.is_set()):
            left = end - time.monotonic()
            if left <= 0:
                return
            self._changed.wait(min(left, 0.05))

    def step(self, only: Collection[int] | None = None) -> bool:
        """One pass: cancellations, new jobs, status poll.  True if anything happened."""
        busy = self._send_cancellations(only)
        if only is None:
            busy = self.rules.fire() > 0 or busy
        claimed = self._claim(only)
        if claimed:
            self._start_all(claimed)
            busy = True
        changed = self._changed.is_set()
        self._changed.clear()
        if time.monotonic() - self._last_poll >= self.poll_interval or busy or changed:
            busy = self._poll(only) or busy
            self._last_poll = time.monotonic()
        return busy

    # -- claim and start -------------------------------------------------------------

    def _claim(self, only: Collection[int] | None) -> list[int]:
        """Claim per backend: the local one runs as many as the machine allows; a scheduler
        (Slurm, Kubernetes) queues and throttles on its side, so far more may be in flight."""
        claimed: list[int] = []
        for name, limits in self.limits.items():
            with self.cat.db.session() as session:
                claimed += claim_jobs(session, self.name, (name,), limits, only)
        return claimed

    def _start_all(self, job_ids: list[int]) -> None:
        """Prepare every claimed job, then submit them grouped by backend, runtime and gear
        (a group becomes one submission where the backend supports it, e.g. a Slurm array)."""
        groups: dict[tuple[str, str, int], list[tuple[int, TaskSpec, ContainerRuntime]]] = (
            defaultdict(list)
        )
        for job_id in job_ids:
            prepared = self._prepare(job_id)
            if prepared is not None:
                job, task, runtime = prepared
                groups[(job.backend, runtime.name, job.gear_id)].append((job.id, task, runtime))
        for (backend_name, _runtime, _gear), items in groups.items():
            runtime = items[0][2]
            try:
                ids = self.backend(backend_name).submit_many([t for _, t, _ in items], runtime)
            except (GearbrokerError, OSError) as exc:
                for job_id, _task, _rt in items:
                    self._end_early(job_id, JobState.FAILED, Reason.SUBMIT, str(exc))
                continue
            with self.cat.db.session() as session:
                for (job_id, _task, _rt), external_id in zip(items, ids, strict=True):
                    row = lock_job(session, job_id)
                    assert row is not None
                    row.external_id = external_id

    def _image_facts(self, runtime: ContainerRuntime, image: str) -> tuple[str | None, str | None]:
        """(digest, runtime version), asked once a minute per runtime and image."""
        key = (runtime.name, image)
        cached = self._digests.get(key)
        if cached is None or time.monotonic() - cached[0] > 60:
            transport = LocalTransport()
            cached = (
                time.monotonic(),
                runtime.image_digest(image, transport),
                runtime.version(transport),
            )
            self._digests[key] = cached
        return cached[1], cached[2]

    def _prepare(self, job_id: int) -> tuple[Job, TaskSpec, ContainerRuntime] | None:
        """Cache check, staging and runtime choice for one claimed job (None: it ended)."""
        with self.cat.db.session(readonly=True) as session:
            job = session.get(Job, job_id)
            assert job is not None
            gear = session.get(Gear, job.gear_id)
            assert gear is not None and job.destination_id is not None
            dest = get_container(session, job.destination_id)
        manifest = load_manifest(gear.manifest)
        image = gear.image or manifest.image or ""
        try:
            backend = self.backend(job.backend)
            if backend.runtimes is not None and not backend.runtimes:
                runtime: ContainerRuntime = NativeRuntime()  # e.g. Kubernetes runs images itself
            else:
                preferred = manifest.preferred_runtime or backend.default_runtime
                runtime = self._runtime_factory(job.runtime, preferred)
            digest, version = self._image_facts(runtime, image)
        except (GearbrokerError, OSError) as exc:
            self._end_early(job_id, JobState.FAILED, Reason.SUBMIT, str(exc))
            return None
        key = cache_key(job, gear, image, digest or manifest.image_digest)
        if not job.options.get("no_cache"):
            source = find_cached(self.cat, key, exclude=job.id)
            if source is not None:
                complete_from_cache(self.cat, job.id, source)
                return None
        try:
            task = stage_job(job, gear, manifest, dest, self.cat.blobs, self.work_dir)
        except (GearbrokerError, OSError) as exc:
            self._end_early(job_id, JobState.FAILED, Reason.STAGING, str(exc))
            return None
        if self._cancel_requested(job_id):
            shutil.rmtree(task.job_dir, ignore_errors=True)
            self._end_early(job_id, JobState.CANCELLED, Reason.CANCELLED, "cancelled before start")
            return None
        with self.cat.db.session() as session:
            row = lock_job(session, job_id)
            assert row is not None
            row.runtime = runtime.name
            row.runtime_version = version
            row.image_digest = digest or manifest.image_digest
            row.cache_key = key
            row.options = {**row.options, "resources": asdict(task.resources)}
        return row, task, runtime

    def _end_early(self, job_id: int, state: JobState, reason: Reason, message: str) -> None:
        log.warning("job %s: %s: %s", job_id, reason.value, message)
        with self.cat.db.session() as session:
            row = lock_job(session, job_id)
            assert row is not None
            if JobState(row.state).terminal:
                return
            row.reason_detail = message
            extra = {"by": row.cancel_requested_by} if state is JobState.CANCELLED else {}
            transition(session, row, state, reason, message=message, **extra)

    def _cancel_requested(self, job_id: int) -> bool:
        with self.cat.db.session(readonly=True) as session:
            return bool(session.scalar(select(Job.cancel_requested_by).where(Job.id == job_id)))

    # -- cancel, poll, reconcile -----------------------------------------------------

    def _send_cancellations(self, only: Collection[int] | None) -> bool:
        with self.cat.db.session(readonly=True) as session:
            stmt = select(Job).where(
                Job.state.in_(ACTIVE),
                Job.cancel_requested_by.is_not(None),
                Job.external_id.is_not(None),
                Job.backend.in_(self.backend_names),
            )
            if only is not None:
                stmt = stmt.where(Job.id.in_(list(only)))
            jobs = [j for j in session.scalars(stmt) if not j.options.get("cancel_sent")]
        for job in jobs:
            assert job.external_id is not None
            self.backend(job.backend).cancel([job.external_id])
            with self.cat.db.session() as session:
                row = lock_job(session, job.id)
                assert row is not None
                row.options = {**row.options, "cancel_sent": True}
        return bool(jobs)

    def _active(self, only: Collection[int] | None) -> list[Job]:
        with self.cat.db.session(readonly=True) as session:
            stmt = select(Job).where(Job.state.in_(ACTIVE), Job.backend.in_(self.backend_names))
            if only is not None:
                stmt = stmt.where(Job.id.in_(list(only)))
            return list(session.scalars(stmt))

    def _poll(self, only: Collection[int] | None) -> bool:
        """Ask each backend about all its active jobs in one batched call."""
        groups: dict[str, list[Job]] = defaultdict(list)
        for job in self._active(only):
            if job.external_id is not None:
                groups[job.backend].append(job)
        changed = False
        for backend_name, jobs in groups.items():
            ids = [j.external_id for j in jobs if j.external_id is not None]
            statuses = self.backend(backend_name).status(ids)
            for job, status in zip(jobs, statuses, strict=True):
                changed = self._apply_status(job, status) or changed
        return changed

    def _apply_status(self, job: Job, status: TaskStatus) -> bool:
        if status.state is BackendState.RUNNING and job.state == JobState.QUEUED:
            with self.cat.db.session() as session:
                row = lock_job(session, job.id)
                assert row is not None
                if row.state == JobState.QUEUED:
                    transition(session, row, JobState.RUNNING, external_id=row.external_id)
            return True
        if status.state.terminal:
            finalize_job(
                self.cat, job.id, status, job_dir(self.work_dir, job), retry=self._retry_hook
            )
            return True
        return False

    def _retry_hook(self, session: Session, job: Job, gear: Gear) -> None:
        retry_if_due(session, job, gear, self.retry)

    def reconcile(self, only: Collection[int] | None = None) -> None:
        """Bring every non-terminal job in line with what its backend knows."""
        for job in self._active(only):
            if job.external_id is None:
                self._requeue(job)
        self._poll(only)

    def _requeue(self, job: Job) -> None:
        """A job claimed but not recorded as submitted: adopt it if the backend has it
        (the dispatcher died between submit and commit), else put it back to pending."""
        folder = job_dir(self.work_dir, job)
        key = f"gb-job-{job.id}-{job.attempt}"
        found = self.backend(job.backend).find(str(folder), key)
        with self.cat.db.session() as session:
            row = lock_job(session, job.id)
            assert row is not None
            if found is not None:
                row.external_id = found
                return
            shutil.rmtree(folder, ignore_errors=True)
            row.claimed_by = None
            transition(
                session,
                row,
                JobState.PENDING,
                reason="requeued",
                message="its dispatcher stopped before submitting it",
            )

    def _all_terminal(self, only: Collection[int]) -> bool:
        with self.cat.db.session(readonly=True) as session:
            states = session.scalars(select(Job.state).where(Job.id.in_(list(only)))).all()
        return all(JobState(s).terminal for s in states)
