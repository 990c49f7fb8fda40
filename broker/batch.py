"""Batch runs: one gear over every container a search finds, as one Batch of jobs.

For each matched container every gear input needs exactly one file whose name matches the
input's pattern (a glob, or ``re:<regex>``).  Acquisition-level runs look at the
acquisition's own files; session-, subject- and project-level runs look at every file below
the container (analyses excluded).  The plan names each container whose inputs are missing or
ambiguous; only the resolvable ones become jobs.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from broker.jobs import JobRequest, cancel_job, create_job_in
from catalog import audit
from catalog.catalog import Catalog
from catalog.errors import ConflictError, InvalidInputError, NotFoundError
from catalog.gears import get_gear
from catalog.models import ANCESTOR_COLUMNS, Batch, Container, File, Job, JobState, Level
from catalog.tree import container_path, file_path

LEVELS = ("acquisition", "session", "subject", "project")


@dataclass
class PlanRow:
    """One container of a batch: its inputs, or why it cannot run."""

    container_id: int
    path: str
    inputs: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def name_matcher(pattern: str) -> Callable[[str], bool]:
    if pattern.startswith("re:"):
        try:
            regex = re.compile(pattern[3:])
        except re.error as exc:
            raise InvalidInputError(f"bad input pattern {pattern!r}: {exc}") from exc
        return lambda name: regex.search(name) is not None
    return lambda name: fnmatch.fnmatchcase(name, pattern)


def plan_batch(cat: Catalog, query: str, level: str, patterns: Mapping[str, str]) -> list[PlanRow]:
    """Match containers with ``query`` at ``level`` and resolve every input per container."""
    if level not in LEVELS:
        raise InvalidInputError(f"--level must be one of {', '.join(LEVELS)}")
    if not patterns:
        raise InvalidInputError("give at least one --input NAME=PATTERN")
    matchers = {name: name_matcher(p) for name, p in patterns.items()}
    ids = [row[f"{level}.id"] for row in cat.search(query, target=level, columns=[f"{level}.id"])]
    plan: list[PlanRow] = []
    with cat.db.session(readonly=True) as session:
        for container_id in ids:
            container = session.get(Container, container_id)
            assert container is not None
            scope = (
                File.container_id == container.id
                if level == "acquisition"
                else getattr(File, ANCESTOR_COLUMNS[Level(level)]) == container.id
            )
            files = session.scalars(
                select(File)
                .join(Container, Container.id == File.container_id)
                .where(scope, File.current, Container.level != Level.ANALYSIS)
                .order_by(File.id)
            ).all()
            row = PlanRow(container.id, container_path(session, container))
            for name, matches in matchers.items():
                found = [f for f in files if matches(f.name)]
                if len(found) == 1:
                    row.inputs[name] = file_path(session, found[0])
                elif not found:
                    row.problems.append(f"{name}: no file matches {patterns[name]!r}")
                else:
                    names = ", ".join(sorted(f.name for f in found)[:5])
                    row.problems.append(f"{name}: {len(found)} files match ({names})")
            plan.append(row)
    return plan


def submit_batch(
    cat: Catalog,
    gear_ref: str,
    plan: list[PlanRow],
    config: dict[str, Any],
    *,
    backend: str = "local",
    runtime: str | None = None,
    priority: str = "medium",
    options: dict[str, Any] | None = None,
) -> Batch:
    """Create the Batch and one job per runnable container, all in one transaction."""
    runnable = [row for row in plan if row.ok]
    if not runnable:
        raise InvalidInputError("no container in the plan can run")
    gear = get_gear(cat, gear_ref)
    with cat.db.session() as session:
        batch = Batch(
            gear_id=gear.id,
            created_by=cat.actor.username,
            state="running",
            spec={
                "gear": f"{gear.name}:{gear.version}",
                "config": config,
                "containers": len(runnable),
                "skipped": len(plan) - len(runnable),
            },
        )
        session.add(batch)
        session.flush()
        for row in runnable:
            request = JobRequest(
                gear=f"{gear.name}:{gear.version}",
                inputs=row.inputs,
                config=config,
                destination=None,
                backend=backend,
                runtime=runtime,
                priority=priority,
                options=dict(options or {}),
                batch_id=batch.id,
            )
            create_job_in(session, cat, request)
        audit.record(
            session,
            cat.actor,
            "batch.create",
            "batch",
            batch.id,
            None,
            gear=f"{gear.name}:{gear.version}",
            jobs=len(runnable),
        )
        return batch


def batch_status(cat: Catalog, batch_id: int) -> tuple[Batch, dict[str, int]]:
    """The batch and how many of its jobs are in each state (retries count once, newest)."""
    with cat.db.session(readonly=True) as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise NotFoundError(f"no batch {batch_id}")
        if batch.created_by != cat.actor.username and not cat.actor.is_admin:
            raise NotFoundError(f"no batch {batch_id}")
        superseded = select(Job.previous_job_id).where(Job.previous_job_id.is_not(None))
        rows = session.execute(
            select(Job.state, func.count())
            .where(Job.batch_id == batch_id, Job.id.not_in(superseded))
            .group_by(Job.state)
        ).all()
    return batch, dict(Counter({state: count for state, count in rows}))


def cancel_batch(cat: Catalog, batch_id: int) -> int:
    """Cancel every job of the batch that has not ended; returns how many."""
    batch, _ = batch_status(cat, batch_id)
    with cat.db.session(readonly=True) as session:
        ids = list(
            session.scalars(
                select(Job.id).where(
                    Job.batch_id == batch.id,
                    Job.state.not_in([s.value for s in JobState if s.terminal]),
                )
            )
        )
    count = 0
    for job_id in ids:
        try:
            cancel_job(cat, job_id)
            count += 1
        except ConflictError:
            continue  # it ended meanwhile
    with cat.db.session() as session:
        row = session.get(Batch, batch.id)
        assert row is not None
        row.state = "cancelled"
    return count
