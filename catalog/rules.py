"""Gear-rule matching and the rule-trigger queue.

A rule's ``match`` is a small JSON tree::

    {"all": [...]} | {"any": [...]} | {"not": {...}} | leaf
    leaf: any of  "type": "dicom" | ["dicom", "nifti"]
                  "name": "*.dicom.zip" | {"glob": "*.nii*"} | {"regex": "^T1.*"}
                  "modality": "MR" | [...]
                  "tags": "qa" | ["qa", "t1"]          (the file has all of them)
                  "classification": {"Intent": "Structural"}   (the value, or any of a list)
                  "level": "acquisition" | [...]       (level of the file's container)
    (several keys in one leaf must all hold)

When a file version is added (``file-added``) or its metadata changes
(``file-metadata-changed``), the writing transaction queues one RuleTrigger per enabled
matching rule of the file's project.  The unique (rule, file version) key makes a rule fire at
most once per file version, however often and however concurrently the file is touched.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from catalog.errors import InvalidInputError
from catalog.models import HIERARCHY, File, Level, Rule, RuleTrigger

TRIGGERS = ("file-added", "file-metadata-changed")
Matcher = Callable[[File, str], bool]
_LEAF_KEYS = ("type", "name", "modality", "tags", "classification", "level")
#: Inserted with Core: the ORM's bulk insert path costs more than the rest of the matching.
_TRIGGERS = cast(Table, RuleTrigger.__table__)


def _strings(value: Any, path: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise InvalidInputError(f"rule match {path}: expected a string or a list of strings")
    return items


def _name_matcher(spec: Any, path: str) -> Callable[[str], bool]:
    usage = f"rule match {path}: use a glob string, {{glob: ..}} or {{regex: ..}}"
    if isinstance(spec, str):
        spec = {"glob": spec}
    if not isinstance(spec, dict) or len(spec) != 1:
        raise InvalidInputError(usage)
    kind, pattern = next(iter(spec.items()))
    if kind == "glob" and isinstance(pattern, str):
        return lambda name: fnmatch.fnmatchcase(name, pattern)
    if kind == "regex" and isinstance(pattern, str):
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise InvalidInputError(f"rule match {path}: bad regex: {exc}") from exc
        return lambda name: compiled.search(name) is not None
    raise InvalidInputError(usage)


def _leaf(spec: Mapping[str, Any], path: str) -> Matcher:
    unknown = set(spec) - set(_LEAF_KEYS)
    if unknown:
        raise InvalidInputError(
            f"rule match {path}: unknown keys {sorted(unknown)} (use all/any/not, "
            f"{', '.join(_LEAF_KEYS)})"
        )
    checks: list[Matcher] = []
    if "type" in spec:
        types = set(_strings(spec["type"], f"{path}.type"))
        checks.append(lambda f, _lvl: f.type in types)
    if "modality" in spec:
        modalities = set(_strings(spec["modality"], f"{path}.modality"))
        checks.append(lambda f, _lvl: f.modality in modalities)
    if "name" in spec:
        name_ok = _name_matcher(spec["name"], f"{path}.name")
        checks.append(lambda f, _lvl: name_ok(f.name))
    if "tags" in spec:
        tags = set(_strings(spec["tags"], f"{path}.tags"))
        checks.append(lambda f, _lvl: tags <= set(f.tags or ()))
    if "level" in spec:
        levels = set(_strings(spec["level"], f"{path}.level"))
        bad = levels - {lvl.value for lvl in Level}
        if bad:
            raise InvalidInputError(f"rule match {path}.level: unknown levels {sorted(bad)}")
        checks.append(lambda _f, lvl: lvl in levels)
    if "classification" in spec:
        wanted = spec["classification"]
        if not isinstance(wanted, dict) or not wanted:
            raise InvalidInputError(f"rule match {path}.classification: expected an object")
        needed = {k: set(_strings(v, f"{path}.classification.{k}")) for k, v in wanted.items()}
        checks.append(
            lambda f, _lvl: all(
                needed[k] & set((f.classification or {}).get(k) or ()) for k in needed
            )
        )
    if not checks:
        raise InvalidInputError(f"rule match {path}: empty condition")
    return lambda f, lvl: all(check(f, lvl) for check in checks)


def compile_match(spec: Any, path: str = "$") -> Matcher:
    """A predicate for a rule's ``match`` tree; InvalidInputError names the bad part."""
    if not isinstance(spec, dict):
        raise InvalidInputError(f"rule match {path}: expected an object")
    if "all" in spec or "any" in spec:
        key = "all" if "all" in spec else "any"
        items = spec[key]
        if len(spec) != 1 or not isinstance(items, list) or not items:
            raise InvalidInputError(f"rule match {path}.{key}: a non-empty list, alone")
        parts = [compile_match(item, f"{path}.{key}[{i}]") for i, item in enumerate(items)]
        if key == "all":
            return lambda f, lvl: all(p(f, lvl) for p in parts)
        return lambda f, lvl: any(p(f, lvl) for p in parts)
    if "not" in spec:
        if len(spec) != 1:
            raise InvalidInputError(f"rule match {path}.not: must stand alone")
        inner = compile_match(spec["not"], f"{path}.not")
        return lambda f, lvl: not inner(f, lvl)
    return _leaf(spec, path)


def file_level(file: File) -> str:
    """The level of the container holding ``file`` (analysis when no ancestor id is its own)."""
    for level in reversed(HIERARCHY):
        if getattr(file, f"{level.value}_id") == file.container_id:
            return level.value
    return Level.ANALYSIS.value


def _rules_for(session: Session, project_id: int, event: str) -> list[tuple[int, Matcher]]:
    cache: dict[tuple[int, str], list[tuple[int, Matcher]]] = session.info.setdefault(
        "gb_rules", {}
    )
    key = (project_id, event)
    if key not in cache:
        rules = session.scalars(
            select(Rule)
            .where(Rule.project_id == project_id, Rule.enabled, Rule.trigger == event)
            .order_by(Rule.id)
        )
        cache[key] = [(r.id, compile_match(r.match)) for r in rules]
    return cache[key]


def forget_rules(session: Session) -> None:
    """Drop the session's cached rules (after rules change in the same session)."""
    session.info.pop("gb_rules", None)


def enqueue_rule_matches(session: Session, files: Sequence[File], event: str) -> int:
    """Queue a trigger for every enabled ``event`` rule each file matches; returns how many."""
    rows = []
    for file in files:
        if file.project_id is None or not file.current:
            continue
        rules = _rules_for(session, file.project_id, event)
        if not rules:
            continue
        level = file_level(file)
        rows += [
            {"rule_id": rid, "file_id": file.id, "event": event}
            for rid, matches in rules
            if matches(file, level)
        ]
    if rows:
        session.flush()  # the files first (a Core insert does not autoflush)
        connection = session.connection()
        insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
        connection.execute(insert(_TRIGGERS).on_conflict_do_nothing(), rows)
    return len(rows)


def matching_files(session: Session, rule: Rule) -> list[File]:
    """Current files of the rule's project that its match accepts (for preview/backfill)."""
    matcher = compile_match(rule.match)
    files = session.scalars(
        select(File).where(File.project_id == rule.project_id, File.current).order_by(File.id)
    )
    return [f for f in files if matcher(f, file_level(f))]
