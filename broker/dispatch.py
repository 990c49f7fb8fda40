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

from sqlalchemy import func, select

from backends.base import Backend, BackendState, TaskStatus
from broker.finalize import finalize_job
from broker.runtimes.base import ContainerRuntime
from broker.staging import job_dir, stage_job
from broker.states import Reason, transition
from broker.transport import LocalTransport
from catalog.catalog import Catalog
from catalog.errors import ConflictError, GearbrokerError
from catalog.models import Gear, Job, JobState
from catalog.tree import get_container
from gearspec.manifest import load_manifest

log = logging.getLogger(__name__)

BackendFactory = Callable[[str], Backend]
RuntimeFactory = Callable[[str | None, str | None], ContainerRuntime]
ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)


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
        name: str | None = None,
    ) -> None:
        self.cat = cat
        self._backend_factory = backends
        self._runtime_factory = runtimes
        self.work_dir = work_dir
        self.backend_names = tuple(backend_names)
        self.poll_interval = poll_interval
        self.max_in_flight = max_in_flight or (os.cpu_count() or 1) * 4
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._backends: dict[str, Backend] = {}
        self._lock_file: IO[str] | None = None
        self._last_poll = 0.0

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
            self._backends[name] = self._backend_factory(name)
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
                wait = 0.05 if busy else min(self.poll_interval, 0.5)
                if stop is not None:
                    stop.wait(wait)
                else:
                    time.sleep(wait)
        finally:
            self.close()

    def step(self, only: Collection[int] | None = None) -> bool:
        """One pass: cancellations, new jobs, status poll.  True if anything happened."""
        busy = self._send_cancellations(only)
        for job_id in self._claim(only):
            self._start(job_id)
            busy = True
        if time.monotonic() - self._last_poll >= self.poll_interval or busy:
            busy = self._poll(only) or busy
            self._last_poll = time.monotonic()
        return busy

    # -- claim and start -------------------------------------------------------------

    def _claim(self, only: Collection[int] | None) -> list[int]:
        with self.cat.db.session() as session:
            in_flight = (
                session.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.state.in_(ACTIVE), Job.backend.in_(self.backend_names))
                )
                or 0
            )
            room = self.max_in_flight - in_flight
            if room <= 0:
                return []
            stmt = (
                select(Job)
                .where(Job.state == JobState.PENDING.value, Job.backend.in_(self.backend_names))
                .order_by(Job.priority.desc(), Job.id)
                .limit(room)
            )
            if only is not None:
                stmt = stmt.where(Job.id.in_(list(only)))
            if self.cat.db.dialect == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            jobs = list(session.scalars(stmt))
            for job in jobs:
                job.claimed_by = self.name
                transition(session, job, JobState.QUEUED, dispatcher=self.name)
            return [job.id for job in jobs]

    def _start(self, job_id: int) -> None:
        with self.cat.db.session(readonly=True) as session:
            job = session.get(Job, job_id)
            assert job is not None
            gear = session.get(Gear, job.gear_id)
            assert gear is not None and job.destination_id is not None
            dest = get_container(session, job.destination_id)
        manifest = load_manifest(gear.manifest)
        try:
            task = stage_job(job, gear, manifest, dest, self.cat.blobs, self.work_dir)
        except (GearbrokerError, OSError) as exc:
            self._end_early(job_id, JobState.FAILED, Reason.STAGING, str(exc))
            return
        if self._cancel_requested(job_id):
            shutil.rmtree(task.job_dir, ignore_errors=True)
            self._end_early(job_id, JobState.CANCELLED, Reason.CANCELLED, "cancelled before start")
            return
        try:
            runtime = self._runtime_factory(job.runtime, manifest.preferred_runtime)
            transport = LocalTransport()
            digest = runtime.image_digest(task.container.image, transport)
            version = runtime.version(transport)
            backend = self.backend(job.backend)
            external_id = backend.submit(task, runtime)
        except (GearbrokerError, OSError) as exc:
            self._end_early(job_id, JobState.FAILED, Reason.SUBMIT, str(exc))
            return
        with self.cat.db.session() as session:
            row = session.get(Job, job_id)
            assert row is not None
            row.external_id = external_id
            row.runtime = runtime.name
            row.runtime_version = version
            row.image_digest = digest or manifest.image_digest
            row.options = {**row.options, "resources": asdict(task.resources)}

    def _end_early(self, job_id: int, state: JobState, reason: Reason, message: str) -> None:
        log.warning("job %s: %s: %s", job_id, reason.value, message)
        with self.cat.db.session() as session:
            row = session.get(Job, job_id)
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
                row = session.get(Job, job.id)
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
                row = session.get(Job, job.id)
                assert row is not None
                if row.state == JobState.QUEUED:
                    transition(session, row, JobState.RUNNING, external_id=row.external_id)
            return True
        if status.state.terminal:
            finalize_job(self.cat, job.id, status, job_dir(self.work_dir, job))
            return True
        return False

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
            row = session.get(Job, job.id)
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
