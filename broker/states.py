"""Job states, why a job ended, and the one function that moves a job between states.

Users see Flywheel's five states plus ``queued``; the *reason* a job ended is kept apart
(exit code, timeout, out of memory, node failure, lost by the scheduler, cancelled by whom),
and every transition is appended to the JobEvent history.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from backends.base import BackendState
from catalog.errors import ConflictError, NotFoundError
from catalog.models import Job, JobEvent, JobState, utcnow


class Reason(enum.StrEnum):
    """Why a job left the happy path."""

    EXIT_CODE = "exit_code"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAILURE = "node_failure"
    LOST = "lost"  # the backend no longer knows the job
    CANCELLED = "cancelled"
    STAGING = "staging_error"
    SUBMIT = "submit_error"
    FINALIZE = "finalize_error"
    CACHED = "cached"


PRIORITIES = {"low": 1, "medium": 2, "high": 3, "critical": 4}
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}

_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset(
        {JobState.QUEUED, JobState.CANCELLED, JobState.FAILED, JobState.COMPLETE}
    ),
    JobState.QUEUED: frozenset(
        {JobState.PENDING, JobState.RUNNING, JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.RUNNING: frozenset(
        {JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED}
    ),
    JobState.COMPLETE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}

#: How a terminal backend state maps to a job state and reason.
BACKEND_OUTCOME: dict[BackendState, tuple[JobState, Reason | None]] = {
    BackendState.COMPLETED: (JobState.COMPLETE, None),
    BackendState.FAILED: (JobState.FAILED, Reason.EXIT_CODE),
    BackendState.CANCELLED: (JobState.CANCELLED, Reason.CANCELLED),
    BackendState.TIMEOUT: (JobState.FAILED, Reason.TIMEOUT),
    BackendState.OUT_OF_MEMORY: (JobState.FAILED, Reason.OUT_OF_MEMORY),
    BackendState.NODE_FAIL: (JobState.FAILED, Reason.NODE_FAILURE),
    BackendState.MISSING: (JobState.FAILED, Reason.LOST),
}


def lock_job(session: Session, job_id: int) -> Job:
    """The job row, locked for this transaction (``FOR UPDATE`` on PostgreSQL; SQLite write
    transactions are exclusive already), so a state change never overwrites another's."""
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    return job


def lock_jobs(session: Session, job_ids: Collection[int]) -> dict[int, Job]:
    """:func:`lock_job` for many jobs in one statement (in id order, so two dispatchers never
    deadlock); ids that do not exist are left out."""
    stmt = (
        select(Job)
        .where(Job.id.in_(list(job_ids)))
        .order_by(Job.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {job.id: job for job in session.scalars(stmt)}


def transition(
    session: Session,
    job: Job,
    to: JobState,
    reason: Reason | str | None = None,
    **detail: Any,
) -> JobEvent:
    """Move ``job`` to ``to`` (checked against the allowed transitions) and record it."""
    current = JobState(job.state)
    if to not in _ALLOWED[current]:
        raise ConflictError(f"job {job.id} is {current.value}; it cannot become {to.value}")
    now = utcnow()
    job.state = to.value
    if reason is not None:
        job.reason = str(reason)
    if to is JobState.RUNNING and job.started is None:
        job.started = now
    if to.terminal:
        job.finished = now
    event = JobEvent(
        job_id=job.id,
        time=now,
        from_state=current.value,
        to_state=to.value,
        reason=str(reason) if reason is not None else None,
        detail=detail,
    )
    session.add(event)
    return event


def record_created(session: Session, job: Job, **detail: Any) -> None:
    """The first history entry of a job (``None -> pending``)."""
    record_created_many(session, [(job, detail)])


def record_created_many(session: Session, jobs: Sequence[tuple[Job, dict[str, Any]]]) -> None:
    """:func:`record_created` for many flushed jobs, in one statement."""
    if jobs:
        session.execute(
            insert(JobEvent),
            [
                {
                    "job_id": job.id,
                    "time": job.created,
                    "from_state": None,
                    "to_state": job.state,
                    "detail": detail,
                }
                for job, detail in jobs
            ],
        )
