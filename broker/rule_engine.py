"""Turning queued rule triggers into jobs (run by every dispatcher pass).

Triggers are handled in batches, each in one transaction that deletes the batch's triggers
and creates their jobs, so a crash never loses or doubles a firing.  A rule fires once per
file version: triggers whose job exists are dropped, and the job's unique (rule, file
version) key makes a concurrent second attempt fail (the batch is then redone one job per
savepoint).  A trigger that cannot become a job (the gear is not installed, the file does
not fit the gear's input) is dropped alone, with an audit event ``rule.error`` naming the
reason, which ``gearbroker rule show`` lists.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from broker.jobs import JobRequest, create_job_in, create_jobs_in
from broker.lookups import Lookups
from catalog import audit
from catalog.catalog import Catalog
from catalog.errors import GearbrokerError
from catalog.models import ANCESTOR_COLUMNS, Container, File, Job, Rule, RuleTrigger

log = logging.getLogger(__name__)

#: Triggers per write transaction.
BATCH = 50

#: What to do with one trigger: create a job (as the rule's owner), drop it (its rule is gone
#: or disabled), or drop it with the error that stopped the job.
_Plan = tuple[Catalog, JobRequest] | GearbrokerError | None


def rule_request(
    cat: Catalog, rule: Rule, file_id: int, lookups: Lookups | None = None
) -> JobRequest:
    """The job a rule asks for on one file version."""
    ref = f"{rule.gear_name}:{rule.gear_version}" if rule.gear_version else rule.gear_name
    options: dict[str, Any] = dict(rule.options)
    input_name = options.pop("input", None)
    if input_name is None:
        _gear, manifest = (lookups or Lookups(cat)).gear(ref)
        files = [n for n, spec in manifest.inputs.items() if spec.base == "file"]
        if not files:
            raise GearbrokerError(f"gear {ref} has no file input for rule {rule.name!r}")
        input_name = files[0]
    return JobRequest(
        gear=ref,
        inputs={str(input_name): f"<file:{file_id}>"},
        config=dict(rule.config),
        destination=options.pop("destination", None),
        backend=str(options.pop("backend", "local")),
        priority=str(options.pop("priority", "medium")),
        options=options,
        rule_id=rule.id,
        trigger_file_id=file_id,
    )


def _load_inputs(session: Session, file_ids: list[int]) -> list[File | Container]:
    """Load the batch's files and their containers into ``session`` at once; the caller keeps
    the returned list so that the session's (weak) identity map serves the per-job lookups."""
    files = list(session.scalars(select(File).where(File.id.in_(file_ids))))
    ids: set[int] = set()
    for file in files:
        ids.add(file.container_id)
        ids.update(
            getattr(file, column) or file.container_id for column in ANCESTOR_COLUMNS.values()
        )
    containers = list(session.scalars(select(Container).where(Container.id.in_(ids))))
    return [*files, *containers]


def _fired(session: Session, triggers: Sequence[RuleTrigger]) -> set[tuple[int, int]]:
    """(rule, file version) pairs of ``triggers`` that already have their job."""
    found = session.execute(
        select(Job.rule_id, Job.trigger_file_id).where(
            Job.rule_id.in_({t.rule_id for t in triggers}),
            Job.trigger_file_id.in_({t.file_id for t in triggers}),
        )
    )
    return {(r, f) for r, f in found if r is not None and f is not None}


def _create_alone(
    session: Session, owner: Catalog, request: JobRequest, lookups: Lookups
) -> Job | GearbrokerError | None:
    """One job under a savepoint; None when its rule already fired on the file version."""
    try:
        with session.begin_nested():
            return create_job_in(session, owner, request, lookups)
    except sa_exc.IntegrityError:
        return None
    except GearbrokerError as exc:
        return exc


class RuleEngine:
    """Fires queued triggers; acts as each rule's owner."""

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat
        self._owners: dict[str, Catalog] = {}

    def owner(self, username: str) -> Catalog:
        if username not in self._owners:
            self._owners[username] = Catalog(self.cat.db, self.cat.blobs, username)
        return self._owners[username]

    def fire(self, limit: int = 500) -> int:
        """Handle up to ``limit`` triggers in queue order; returns how many jobs were created."""
        with self.cat.db.session(readonly=True) as session:
            triggers = list(
                session.scalars(select(RuleTrigger).order_by(RuleTrigger.id).limit(limit))
            )
            rule_ids = {t.rule_id for t in triggers}
            rules = {r.id: r for r in session.scalars(select(Rule).where(Rule.id.in_(rule_ids)))}
        created = 0
        for start in range(0, len(triggers), BATCH):
            batch = triggers[start : start + BATCH]
            lookups = Lookups(self.cat)
            plans = {t.id: self._plan(rules.get(t.rule_id), t.file_id, lookups) for t in batch}
            try:
                created += self._fire_batch(plans, lookups)
            except sa_exc.IntegrityError:  # rolled back: a job was created meanwhile
                created += self._fire_batch(plans, lookups, one_by_one=True)
        return created

    def _plan(self, rule: Rule | None, file_id: int, lookups: Lookups) -> _Plan:
        """Prepared outside the write transaction."""
        if rule is None or not rule.enabled:
            return None
        owner = self.owner(rule.created_by or "")
        try:
            return owner, rule_request(owner, rule, file_id, lookups)
        except GearbrokerError as exc:
            return exc

    def _fire_batch(
        self, plans: dict[int, _Plan], lookups: Lookups, one_by_one: bool = False
    ) -> int:
        """Jobs for the batch's triggers still queued, inserted together (``one_by_one``: each
        under its own savepoint, for when another dispatcher created one of them meanwhile)."""
        with self.cat.db.session() as session:
            stmt = select(RuleTrigger).where(RuleTrigger.id.in_(plans)).order_by(RuleTrigger.id)
            if self.cat.db.dialect == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            rows: Sequence[RuleTrigger] = session.scalars(stmt).all()  # others took the rest
            if not rows:
                return 0
            session.execute(
                delete(RuleTrigger).where(RuleTrigger.id.in_([r.id for r in rows])),
                execution_options={"synchronize_session": False},
            )
            inputs = _load_inputs(session, [r.file_id for r in rows])
            fired = _fired(session, rows)
            todo: list[tuple[RuleTrigger, Catalog, JobRequest]] = []
            for row in rows:
                plan = plans[row.id]
                if isinstance(plan, GearbrokerError):
                    self._record_error(session, row, plan)
                elif plan is not None and (row.rule_id, row.file_id) not in fired:
                    todo.append((row, *plan))
            results: Sequence[Job | GearbrokerError | None]
            if one_by_one:
                results = [_create_alone(session, o, r, lookups) for _row, o, r in todo]
            else:
                results = create_jobs_in(session, [(o, r) for _row, o, r in todo], lookups)
            created = 0
            for (row, _owner, _request), result in zip(todo, results, strict=True):
                if isinstance(result, GearbrokerError):
                    self._record_error(session, row, result)
                elif result is not None:
                    created += 1
            del inputs
        return created

    def _record_error(self, session: Session, trigger: RuleTrigger, error: Exception) -> None:
        log.warning("rule %s on file %s: %s", trigger.rule_id, trigger.file_id, error)
        audit.record(
            session,
            self.cat.actor,
            "rule.error",
            "rule",
            trigger.rule_id,
            None,
            file_id=trigger.file_id,
            error=str(error),
        )
