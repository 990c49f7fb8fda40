"""The dispatcher: claims pending jobs, has them started (:mod:`broker.starting`), polls, finalizes.

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
from pathlib import Path
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from backends.base import Backend, BackendState, TaskStatus
from broker.claim import ACTIVE, ClaimLimits, claim_jobs
from broker.finalize import Ended, finalize_jobs
from broker.retry import RetrySettings, retry_if_due
from broker.rule_engine import RuleEngine
from broker.staging import job_dir
from broker.starting import JobStarter, RuntimeFactory
from broker.states import lock_job, lock_jobs, transition
from catalog.catalog import Catalog
from catalog.errors import ConflictError
from catalog.models import Gear, Job, JobState

log = logging.getLogger(__name__)

#: Jobs a scheduler backend may hold at once (it queues and throttles them itself).
REMOTE_IN_FLIGHT = 5000

BackendFactory = Callable[[str], Backend]


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
        self.starter = JobStarter(cat, self.backend, runtimes, work_dir)
        self._backends: dict[str, Backend] = {}
        self._lock_file: IO[str] | None = None
        self._last_poll = 0.0
        #: Per backend: no free slot, so no claim until then (or until a job ends).
        self._full_until: dict[str, float] = {}
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
        """One pass: cancellations, status poll, new jobs, then finishing the ended ones.
        True if anything happened.

        New jobs are claimed (the ended ones' slots counting as free) and submitted before the
        ended ones are finalized, so the backend has work while the catalog records results."""
        busy = self._send_cancellations(only)
        if only is None:
            busy = self.rules.fire() > 0 or busy
        changed = self._changed.is_set()
        self._changed.clear()
        ended: list[tuple[Job, TaskStatus]] = []
        if time.monotonic() - self._last_poll >= self.poll_interval or busy or changed:
            started, ended = self._poll(only)
            busy = busy or started or bool(ended)
            self._last_poll = time.monotonic()
        claimed = self._claim(only, {job.id for job, _status in ended})
        if claimed:
            self.starter.start(claimed)
            busy = True
        self._finalize_all(ended)
        return busy

    # -- claim and start -------------------------------------------------------------

    def _claim(self, only: Collection[int] | None, ending: Collection[int] = ()) -> list[int]:
        """Claim per backend: the local one runs as many as the machine allows; a scheduler
        (Slurm, Kubernetes) queues and throttles on its side, so far more may be in flight."""
        claimed: list[int] = []
        now = time.monotonic()
        for name, limits in self.limits.items():
            if not ending and self._full_until.get(name, 0.0) > now:
                continue  # no slot freed here since the last look; others' jobs may end
            with self.cat.db.session() as session:
                ids, room = claim_jobs(session, self.name, (name,), limits, only, ending)
            claimed += ids
            if room <= 0:
                self._full_until[name] = now + self.poll_interval
            else:
                self._full_until.pop(name, None)
        return claimed

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

    def _poll(self, only: Collection[int] | None) -> tuple[bool, list[tuple[Job, TaskStatus]]]:
        """Ask each backend about all its active jobs in one batched call and mark those
        that started: (whether any started, the ended jobs with their statuses, which the
        caller finalizes)."""
        groups: dict[str, list[Job]] = defaultdict(list)
        for job in self._active(only):
            if job.external_id is not None:
                groups[job.backend].append(job)
        running: list[int] = []
        ended: list[tuple[Job, TaskStatus]] = []
        for backend_name, jobs in groups.items():
            ids = [j.external_id for j in jobs if j.external_id is not None]
            statuses = self.backend(backend_name).status(ids)
            for job, status in zip(jobs, statuses, strict=True):
                if status.state.terminal:
                    ended.append((job, status))
                elif status.state is BackendState.RUNNING and job.state == JobState.QUEUED:
                    running.append(job.id)
        if running:
            with self.cat.db.session() as session:
                for row in lock_jobs(session, running).values():
                    if row.state == JobState.QUEUED:
                        transition(session, row, JobState.RUNNING, external_id=row.external_id)
        return bool(running), ended

    def _finalize_all(self, ended: list[tuple[Job, TaskStatus]]) -> None:
        """Record the ended jobs' results, all in one transaction."""
        if ended:
            finalize_jobs(
                self.cat,
                [Ended(job.id, status, job_dir(self.work_dir, job)) for job, status in ended],
                retry=self._retry_hook,
            )

    def _retry_hook(self, session: Session, job: Job, gear: Gear) -> None:
        retry_if_due(session, job, gear, self.retry)

    def reconcile(self, only: Collection[int] | None = None) -> None:
        """Bring every non-terminal job in line with what its backend knows."""
        for job in self._active(only):
            if job.external_id is None:
                self._requeue(job)
        _started, ended = self._poll(only)
        self._finalize_all(ended)

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
