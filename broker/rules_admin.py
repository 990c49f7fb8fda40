"""Managing gear rules: add (validated), list, enable/disable, remove, preview, backfill.

Rules belong to a project and are managed by its admins.  A rule is checked completely when
it is saved: the match tree, the gear (pinned version or newest), the input it feeds, and its
config against the gear's manifest.  Rules can also be kept in a YAML file with the project
and loaded with :func:`load_rules` (upsert by name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from broker.jobs import create_job_in
from broker.rule_engine import rule_request
from broker.states import PRIORITIES
from catalog import audit
from catalog.access import require
from catalog.catalog import Catalog
from catalog.errors import InvalidInputError, NotFoundError
from catalog.gears import get_gear
from catalog.models import AuditEvent, Container, Job, Level, RoleName, Rule
from catalog.paths import parse_path
from catalog.rules import TRIGGERS, compile_match, forget_rules, matching_files
from catalog.tree import file_path, resolve_container
from gearspec.config_resolve import check_config
from gearspec.errors import InvocationError
from gearspec.manifest import load_manifest

_OPTION_KEYS = ("input", "destination", "priority", "backend", "max_retries", "no_cache")


@dataclass(frozen=True)
class RuleSpec:
    """A rule as a user writes it (CLI flags or one YAML entry)."""

    name: str
    gear: str
    match: dict[str, Any]
    trigger: str = "file-added"
    config: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    enabled: bool = True

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> RuleSpec:
        known = {"name", "gear", "match", "trigger", "config", "enabled", *_OPTION_KEYS}
        unknown = set(doc) - known
        if unknown:
            raise InvalidInputError(f"rule {doc.get('name')!r}: unknown keys {sorted(unknown)}")
        for key in ("name", "gear", "match"):
            if key not in doc:
                raise InvalidInputError(f"rule {doc.get('name')!r}: {key!r} is required")
        return cls(
            name=str(doc["name"]),
            gear=str(doc["gear"]),
            match=dict(doc["match"]),
            trigger=str(doc.get("trigger", "file-added")),
            config=dict(doc.get("config") or {}),
            options={k: doc[k] for k in _OPTION_KEYS if k in doc},
            enabled=bool(doc.get("enabled", True)),
        )


def _project(cat: Catalog, path: str, role: RoleName) -> Container:
    with cat.db.session(readonly=True) as session:
        project = resolve_container(session, parse_path(path))
        if project.level != Level.PROJECT:
            raise InvalidInputError(f"{path!r} is not a project")
        require(session, cat.actor, project, role)
        return project


def validate_rule(cat: Catalog, spec: RuleSpec) -> dict[str, Any]:
    """Check every part of ``spec``; returns the config to store."""
    if not spec.name or len(spec.name) > 255:
        raise InvalidInputError("a rule needs a name of at most 255 characters")
    if spec.trigger not in TRIGGERS:
        raise InvalidInputError(f"trigger must be one of {', '.join(TRIGGERS)}")
    compile_match(spec.match)
    manifest = load_manifest(get_gear(cat, spec.gear).manifest)
    options = spec.options or {}
    files = [n for n, s in manifest.inputs.items() if s.base == "file"]
    wanted = options.get("input", files[0] if files else None)
    if wanted not in files:
        raise InvalidInputError(f"gear {spec.gear} has no file input {wanted!r} ({files})")
    if options.get("priority", "medium") not in PRIORITIES:
        raise InvalidInputError(f"priority must be one of {', '.join(PRIORITIES)}")
    _resolved, issues = check_config(manifest, spec.config or {})
    if issues:
        raise InvocationError(issues, source=f"config of rule {spec.name!r}")
    return dict(spec.config or {})  # defaults are resolved per job (the gear may be "latest")


def save_rule(cat: Catalog, project_path: str, spec: RuleSpec) -> Rule:
    """Create or replace the project's rule named ``spec.name``."""
    project = _project(cat, project_path, RoleName.ADMIN)
    config = validate_rule(cat, spec)
    name, _, version = spec.gear.partition(":")
    with cat.db.session() as session:
        rule = session.scalars(
            select(Rule).where(Rule.project_id == project.id, Rule.name == spec.name)
        ).one_or_none()
        if rule is None:
            rule = Rule(project_id=project.id, name=spec.name, created_by=cat.actor.username)
            session.add(rule)
        rule.trigger = spec.trigger
        rule.match = spec.match
        rule.gear_name = name
        rule.gear_version = version or None
        rule.config = config
        rule.options = dict(spec.options or {})
        rule.enabled = spec.enabled
        session.flush()
        forget_rules(session)
        audit.record(
            session,
            cat.actor,
            "rule.save",
            "rule",
            rule.id,
            project_path,
            name=spec.name,
            gear=spec.gear,
        )
        return rule


def load_rules(cat: Catalog, project_path: str, path: Path) -> list[Rule]:
    """Save every rule of a YAML file (a list of rule mappings, or ``{rules: [...]}``)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInputError(f"cannot read rules from {path}: {exc}") from exc
    entries = doc.get("rules") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise InvalidInputError(f"{path}: expected a list of rules (or a 'rules:' list)")
    specs = [RuleSpec.from_mapping(entry) for entry in entries]
    for spec in specs:  # validate all before saving any
        validate_rule(cat, spec)
    return [save_rule(cat, project_path, spec) for spec in specs]


def get_rule(cat: Catalog, project_path: str, name: str) -> Rule:
    project = _project(cat, project_path, RoleName.READ_ONLY)
    with cat.db.session(readonly=True) as session:
        rule = session.scalars(
            select(Rule).where(Rule.project_id == project.id, Rule.name == name)
        ).one_or_none()
        if rule is None:
            raise NotFoundError(f"no rule {name!r} in {project_path}")
        return rule


def list_rules(cat: Catalog, project_path: str) -> list[Rule]:
    project = _project(cat, project_path, RoleName.READ_ONLY)
    with cat.db.session(readonly=True) as session:
        return list(
            session.scalars(select(Rule).where(Rule.project_id == project.id).order_by(Rule.id))
        )


def set_enabled(cat: Catalog, project_path: str, name: str, enabled: bool) -> Rule:
    rule = get_rule(cat, project_path, name)
    _project(cat, project_path, RoleName.ADMIN)
    with cat.db.session() as session:
        row = session.get(Rule, rule.id)
        assert row is not None
        row.enabled = enabled
        audit.record(
            session,
            cat.actor,
            "rule.enable" if enabled else "rule.disable",
            "rule",
            row.id,
            project_path,
        )
        return row


def remove_rule(cat: Catalog, project_path: str, name: str) -> None:
    rule = get_rule(cat, project_path, name)
    _project(cat, project_path, RoleName.ADMIN)
    with cat.db.session() as session:
        row = session.get(Rule, rule.id)
        session.delete(row)
        audit.record(session, cat.actor, "rule.remove", "rule", rule.id, project_path)


def rule_activity(cat: Catalog, rule: Rule, limit: int = 20) -> tuple[list[Job], list[AuditEvent]]:
    """The rule's recent jobs and the recent triggers it could not turn into jobs."""
    with cat.db.session(readonly=True) as session:
        jobs = list(
            session.scalars(
                select(Job).where(Job.rule_id == rule.id).order_by(Job.id.desc()).limit(limit)
            )
        )
        errors = list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "rule.error", AuditEvent.target_id == rule.id)
                .order_by(AuditEvent.id.desc())
                .limit(limit)
            )
        )
    return jobs, errors


def preview(cat: Catalog, project_path: str, name: str) -> list[tuple[str, int, str]]:
    """(file path, file id, status) for every current file the rule matches now; status is
    ``fired`` (a job exists for that version) or ``would fire``."""
    rule = get_rule(cat, project_path, name)
    with cat.db.session(readonly=True) as session:
        fired = set(session.scalars(select(Job.trigger_file_id).where(Job.rule_id == rule.id)))
        return [
            (file_path(session, f), f.id, "fired" if f.id in fired else "would fire")
            for f in matching_files(session, rule)
        ]


def backfill(cat: Catalog, project_path: str, name: str, rerun: bool = False) -> list[int]:
    """Create the rule's jobs for matching existing files (also the fired ones if ``rerun``)."""
    rule = get_rule(cat, project_path, name)
    _project(cat, project_path, RoleName.READ_WRITE)
    created: list[int] = []
    for _path, file_id, status in preview(cat, project_path, name):
        if status == "fired" and not rerun:
            continue
        request = rule_request(cat, rule, file_id)
        if status == "fired":  # a re-run is not the rule's one automatic firing
            request.trigger_file_id = None
            request.options = {**request.options, "backfill_of": file_id}
        with cat.db.session() as session:
            created.append(create_job_in(session, cat, request).id)
    return created
