"""Which pending jobs a dispatcher takes next: priority first, then fairness between users.

Within one priority, users take turns: every user's oldest pending job comes before anyone's
second (a user's jobs already in flight count as turns taken), so one user's 10,000-job batch
does not starve another's single job.  Per-user and per-project limits on jobs in flight are
respected, and retries wait for their backoff (``not_before``).  On PostgreSQL the chosen
rows are locked with ``FOR UPDATE SKIP LOCKED``, so several dispatchers never take the same
job; on SQLite one dispatcher runs at a time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from broker.states import transition
from catalog.models import Container, Job, JobState, utcnow

ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)
_WINDOW = 4  # candidates read per free slot, so limits can skip some and still fill


@dataclass(frozen=True)
class ClaimLimits:
    in_flight: int
    per_user: int = 0  # 0: no limit
    per_project: int = 0


def _project_of() -> ColumnElement[int]:
    return func.coalesce(Container.project_id, Container.id)


def claim_jobs(
    session: Session,
    dispatcher: str,
    backends: Collection[str],
    limits: ClaimLimits,
    only: Collection[int] | None = None,
    ending: Collection[int] = (),
) -> tuple[list[int], int]:
    """Move the next pending jobs to ``queued`` for ``dispatcher``: (their ids, the in-flight
    slots left free after them).

    ``ending``: active jobs whose backend reported their end (about to be finalized); their
    slots count as free."""
    active_stmt = (
        select(Job.created_by, _project_of(), Job.backend)
        .join(Container, Container.id == Job.destination_id, isouter=True)
        .where(Job.state.in_(ACTIVE))
    )
    if ending:
        active_stmt = active_stmt.where(Job.id.not_in(list(ending)))
    active = session.execute(active_stmt).all()
    room = limits.in_flight - sum(1 for *_, backend in active if backend in backends)
    if room <= 0:
        return [], room
    per_user = Counter(user for user, _, _ in active)
    per_project = Counter(project for _, project, _ in active)
    turn = func.row_number().over(partition_by=(Job.priority, Job.created_by), order_by=Job.id)
    now = utcnow()
    stmt = (
        select(Job.id, Job.priority, Job.created_by, _project_of(), turn)
        .join(Container, Container.id == Job.destination_id, isouter=True)
        .where(Job.state == JobState.PENDING.value, Job.backend.in_(list(backends)))
        .where(or_(Job.not_before.is_(None), Job.not_before <= now))
    )
    if only is not None:
        stmt = stmt.where(Job.id.in_(list(only)))
    ranked = stmt.subquery()
    rows = session.execute(
        select(ranked)
        .order_by(ranked.c[1].desc(), ranked.c[4], ranked.c[0])
        .limit(room * _WINDOW + 16)
    ).all()
    rows = sorted(rows, key=lambda r: (-r[1], r[4] + per_user[r[2]], r[0]))
    chosen: list[int] = []
    for job_id, _priority, user, project, _turn in rows:
        if len(chosen) >= room:
            break
        if limits.per_user and per_user[user] >= limits.per_user:
            continue
        if (
            limits.per_project
            and project is not None
            and per_project[project] >= limits.per_project
        ):
            continue
        chosen.append(job_id)
        per_user[user] += 1
        per_project[project] += 1
    if not chosen:
        return [], room
    lock = select(Job).where(Job.id.in_(chosen), Job.state == JobState.PENDING.value)
    if session.get_bind().dialect.name == "postgresql":
        lock = lock.with_for_update(skip_locked=True)
    jobs = sorted(session.scalars(lock), key=lambda j: chosen.index(j.id))
    for job in jobs:
        job.claimed_by = dispatcher
        transition(session, job, JobState.QUEUED, dispatcher=dispatcher)
    return [job.id for job in jobs], room - len(jobs)
