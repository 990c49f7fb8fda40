"""A gear's ``output/.metadata.json``: validation and the change set it asks for.

Shape (every level optional)::

    {"acquisition": {"label": ..., "info": {...}, "tags": [...],
                     "files": [{"name": "out.nii.gz", "type": "nifti", "modality": "MR",
                                "classification": {"Intent": ["Structural"]},
                                "info": {...}, "tags": [...]}]},
     "session": {...}, "subject": {...}, "project": {...}, "analysis": {...}}

A gear may only write to the containers of its job's scope (the destination and its
ancestors), and may only describe files it produced (at the destination level) or the
job's input files on that container.  A file's legacy ``instrument`` key is accepted
and ignored; legacy ``metadata`` is read as ``info``.  Applying the :class:`ChangeSet`
is the catalog's job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator

from gearspec.errors import Issue, MetadataError, child
from gearspec.inputs import InputFile, file_name_problem
from gearspec.schema import collect_issues
from gearspec.staging import CONTAINER_LEVELS, Destination

METADATA_FILE = ".metadata.json"

_STR_LIST = {"type": "array", "items": {"type": "string"}}
_NULLABLE_STR = {"type": ["string", "null"]}
_COMMON = {
    "label": {"type": "string"},
    "info": {"type": "object"},
    "tags": _STR_LIST,
    "uid": {"type": "string"},
    "timestamp": {"type": "string"},
    "timezone": {"type": "string"},
}
_LEVEL_FIELDS: dict[str, dict[str, Any]] = {
    "project": {"description": {"type": "string"}},
    "subject": {
        k: _NULLABLE_STR
        for k in (
            "code",
            "firstname",
            "lastname",
            "sex",
            "type",
            "species",
            "strain",
            "race",
            "ethnicity",
            "cohort",
        )
    },
    "session": {
        "age": {"type": ["number", "null"]},
        "weight": {"type": ["number", "null"]},
        "operator": _NULLABLE_STR,
    },
    "acquisition": {"instrument": _NULLABLE_STR},
    "analysis": {"description": {"type": "string"}},
}
_FILE = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "type": _NULLABLE_STR,
        "modality": _NULLABLE_STR,
        "mimetype": {"type": "string"},
        "info": {"type": "object"},
        "tags": _STR_LIST,
        "classification": {"type": "object", "additionalProperties": _STR_LIST},
        "metadata": {"type": "object"},
        "instrument": _NULLABLE_STR,
    },
}
_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        level: {
            "type": "object",
            "additionalProperties": False,
            "properties": {**_COMMON, **extra, "files": {"type": "array", "items": _FILE}},
        }
        for level, extra in _LEVEL_FIELDS.items()
    },
}
_VALIDATOR = Draft7Validator(_SCHEMA)
_SPECIAL = ("info", "tags", "files")


@dataclass(frozen=True)
class JobScope:
    """What a job may write: container ids by level, its output and input file names."""

    containers: Mapping[str, str]
    destination_level: str
    output_files: frozenset[str] = frozenset()
    input_files: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class FileUpdate:
    """Metadata for one file; ``None`` means "leave unchanged"."""

    name: str
    type: str | None = None
    modality: str | None = None
    mimetype: str | None = None
    classification: Mapping[str, tuple[str, ...]] | None = None
    info: Mapping[str, Any] | None = None
    tags: tuple[str, ...] | None = None
    is_output: bool = False


@dataclass(frozen=True)
class ContainerUpdate:
    """Changes to one container: plain ``fields`` (label, ...), info, tags and files."""

    level: str
    container_id: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    info: Mapping[str, Any] | None = None
    tags: tuple[str, ...] | None = None
    files: tuple[FileUpdate, ...] = ()


@dataclass(frozen=True)
class ChangeSet:
    """Everything a gear's ``.metadata.json`` asks the catalog to change."""

    updates: tuple[ContainerUpdate, ...] = ()

    def is_empty(self) -> bool:
        return not self.updates

    def for_level(self, level: str) -> ContainerUpdate | None:
        return next((u for u in self.updates if u.level == level), None)


def scope_for(
    destination: Destination,
    ancestors: Mapping[str, str],
    output_dir: Path | None,
    inputs: Sequence[InputFile] = (),
    output_names: Iterable[str] | None = None,
) -> JobScope:
    """The scope of a finished job: ``destination`` plus ``ancestors`` (level -> id), the
    files in ``output_dir`` (or the given ``output_names``) and the input files, by the level
    of their hierarchy."""
    containers = {**ancestors, destination.type: destination.id}
    by_level: dict[str, set[str]] = {}
    for item in inputs:
        hierarchy = item.hierarchy
        if hierarchy is not None and containers.get(hierarchy.type) == hierarchy.id:
            by_level.setdefault(hierarchy.type, set()).add(item.staged_name)
    if output_names is not None:
        outputs = frozenset(output_names)
    elif output_dir is not None:
        outputs = output_file_names(output_dir)
    else:
        outputs = frozenset()
    return JobScope(
        containers=containers,
        destination_level=destination.type,
        output_files=outputs,
        input_files={level: frozenset(names) for level, names in by_level.items()},
    )


def output_file_names(output_dir: Path) -> frozenset[str]:
    """Names of the regular files directly in ``output_dir`` except ``.metadata.json``."""
    return frozenset(
        p.name
        for p in Path(output_dir).iterdir()
        if p.name != METADATA_FILE and p.is_file() and not p.is_symlink()
    )


def load_metadata(output_dir: Path, scope: JobScope) -> ChangeSet:
    """Read ``output_dir/.metadata.json`` (absent: empty change set) and check it."""
    doc = read_metadata_doc(output_dir)
    if doc is None:
        return ChangeSet()
    return parse_metadata(doc, scope, source=str(Path(output_dir) / METADATA_FILE))


def read_metadata_doc(output_dir: Path) -> object | None:
    """The raw ``.metadata.json`` document, or None when the gear wrote none."""
    path = Path(output_dir) / METADATA_FILE
    if not path.exists():
        return None
    try:
        doc: object = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError([Issue("$", f"cannot read JSON: {exc}")], source=str(path)) from exc
    return doc


def parse_metadata(doc: object, scope: JobScope, source: str | None = None) -> ChangeSet:
    """The change set of a metadata document; :class:`MetadataError` lists every problem
    (schema, unsafe file names, levels or files outside the job's scope)."""
    issues = collect_issues(_VALIDATOR, doc)
    if issues:
        raise MetadataError(issues, source=source)
    assert isinstance(doc, dict)
    updates = []
    for level in CONTAINER_LEVELS:
        if level not in doc:
            continue
        path = child("$", level)
        if level not in scope.containers:
            allowed = ", ".join(scope.containers) or "nothing"
            issues.append(Issue(path, f"{level} is outside the job's scope (allowed: {allowed})"))
            continue
        block = doc[level]
        files, file_issues = _files(level, block.get("files", []), scope, path)
        issues.extend(file_issues)
        updates.append(
            ContainerUpdate(
                level=level,
                container_id=scope.containers[level],
                fields={k: v for k, v in block.items() if k not in _SPECIAL},
                info=block.get("info"),
                tags=tuple(block["tags"]) if "tags" in block else None,
                files=files,
            )
        )
    if issues:
        raise MetadataError(sorted(issues), source=source)
    return ChangeSet(tuple(updates))


def _files(
    level: str, entries: list[dict[str, Any]], scope: JobScope, path: str
) -> tuple[tuple[FileUpdate, ...], list[Issue]]:
    outputs = scope.output_files if level == scope.destination_level else frozenset()
    inputs = scope.input_files.get(level, frozenset())
    issues: list[Issue] = []
    files: list[FileUpdate] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = child(path, "files", index)
        name = entry["name"]
        problem = file_name_problem(name)
        if problem:
            issues.append(Issue(child(where, "name"), problem))
            continue
        if name in seen:
            issues.append(Issue(child(where, "name"), f"file {name!r} is described twice"))
            continue
        seen.add(name)
        if name not in outputs and name not in inputs:
            reason = f"file {name!r} is neither an output of this job nor one of its inputs here"
            issues.append(Issue(child(where, "name"), reason))
            continue
        if "info" in entry and "metadata" in entry:
            issues.append(Issue(child(where, "metadata"), "give 'info' or legacy 'metadata'"))
            continue
        files.append(_file_update(entry, is_output=name in outputs))
    return tuple(files), issues


def _file_update(entry: Mapping[str, Any], is_output: bool) -> FileUpdate:
    info = entry.get("info", entry.get("metadata"))
    classification = entry.get("classification")
    return FileUpdate(
        name=entry["name"],
        type=entry.get("type"),
        modality=entry.get("modality"),
        mimetype=entry.get("mimetype"),
        classification=(
            {k: tuple(v) for k, v in classification.items()} if classification is not None else None
        ),
        info=info,
        tags=tuple(entry["tags"]) if "tags" in entry else None,
        is_output=is_output,
    )
