"""Turning queued rule triggers into jobs (run by every dispatcher pass).

Each trigger is handled in one transaction that creates the job and deletes the trigger, so
a crash never loses or doubles a firing; the job's unique (rule, file version) key makes a
concurrent second attempt fail harmlessly.  A trigger that cannot become a job (the gear is
not installed, the file does not fit the gear's input) is dropped with an audit event
``rule.error`` naming the reason, which ``gearbroker rule show`` lists.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy import exc as sa_exc

from broker.jobs import JobRequest, create_job_in
from catalog import audit
from catalog.catalog import Catalog
from catalog.errors import GearbrokerError
from catalog.gears import get_gear
from catalog.models import Rule, RuleTrigger
from gearspec.manifest import load_manifest

log = logging.getLogger(__name__)


def rule_request(cat: Catalog, rule: Rule, file_id: int) -> JobRequest:
    """The job a rule asks for on one file version."""
    ref = f"{rule.gear_name}:{rule.gear_version}" if rule.gear_version else rule.gear_name
    options: dict[str, Any] = dict(rule.options)
    input_name = options.pop("input", None)
    if input_name is None:
        manifest = load_manifest(get_gear(cat, ref).manifest)
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
            ids = list(
                session.scalars(select(RuleTrigger.id).order_by(RuleTrigger.id).limit(limit))
            )
        created = 0
        for trigger_id in ids:
            try:
                created += self._fire_one(trigger_id)
            except (GearbrokerError, sa_exc.IntegrityError) as exc:
                self._drop(trigger_id, exc)
        return created

    def _fire_one(self, trigger_id: int) -> int:
        with self.cat.db.session(readonly=True) as session:
            trigger = session.get(RuleTrigger, trigger_id)
            rule = session.get(Rule, trigger.rule_id) if trigger is not None else None
        if trigger is None:
            return 0  # another dispatcher took it
        request = None
        owner = self.cat
        if rule is not None and rule.enabled:  # prepared outside the write transaction
            owner = self.owner(rule.created_by or "")
            request = rule_request(owner, rule, trigger.file_id)
        with self.cat.db.session() as session:
            stmt = select(RuleTrigger).where(RuleTrigger.id == trigger_id)
            if self.cat.db.dialect == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            row = session.scalars(stmt).one_or_none()
            if row is None:
                return 0
            session.delete(row)
            if request is None:
                return 0
            create_job_in(session, owner, request)
            return 1

    def _drop(self, trigger_id: int, error: Exception) -> None:
        already = isinstance(error, sa_exc.IntegrityError)
        with self.cat.db.session() as session:
            trigger = session.get(RuleTrigger, trigger_id)
            if trigger is None:
                return
            if not already:
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
            session.execute(delete(RuleTrigger).where(RuleTrigger.id == trigger_id))
