"""Input files of a gear run and their checks against the manifest's ``inputs``.

A file name becomes a path component inside the run folder, so hostile names are
rejected, never rewritten: empty, ``.``/``..``, containing ``/`` or NUL, or longer than
255 bytes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator, Draft7Validator
from jsonschema.exceptions import SchemaError

from gearspec.errors import Issue, child
from gearspec.manifest import Manifest

#: File attributes a manifest input directive may constrain (e.g. ``"type": {"enum": ...}``).
FILE_ATTRIBUTES = ("name", "type", "size", "mimetype", "modality", "tags", "classification", "info")
_MAX_NAME_BYTES = 255


@dataclass(frozen=True)
class Hierarchy:
    """The catalog container a file belongs to."""

    type: str
    id: str


@dataclass(frozen=True)
class InputFile:
    """One file given to one manifest input (``name``), with its catalog metadata.

    ``file_name`` defaults to the source file's name; ``size`` to its size on disk.
    """

    name: str
    source_path: Path
    file_name: str = ""
    type: str | None = None
    mimetype: str = "application/octet-stream"
    modality: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    tags: Sequence[str] = ()
    classification: Mapping[str, Sequence[str]] = field(default_factory=dict)
    size: int | None = None
    file_id: str | None = None
    version: int | None = None
    hierarchy: Hierarchy | None = None

    @property
    def staged_name(self) -> str:
        return self.file_name or Path(self.source_path).name

    def real_size(self) -> int:
        """``size`` if given, else the source file's size on disk."""
        return self.size if self.size is not None else Path(self.source_path).stat().st_size

    def object_fields(self) -> dict[str, Any]:
        """The ``object`` block of this input in config.json."""
        return {
            "type": self.type,
            "mimetype": self.mimetype,
            "modality": self.modality,
            "info": copy.deepcopy(dict(self.info)),
            "tags": list(self.tags),
            "classification": {k: list(v) for k, v in self.classification.items()},
            "size": self.real_size(),
            "file_id": self.file_id,
            "version": self.version,
        }

    def attribute(self, key: str) -> object:
        """The value an input directive named ``key`` is checked against."""
        if key == "name":
            return self.staged_name
        if key == "size":
            return self.real_size()
        return self.object_fields()[key]


def file_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a staged file name, or None when it is safe."""
    if name in ("", ".", ".."):
        return f"file name {name!r} is not allowed"
    if "\0" in name:
        return "file name contains a NUL byte"
    if "/" in name:
        return f"file name {name!r} contains '/' (absolute or nested paths are not allowed)"
    if len(name.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        return f"file name is longer than {_MAX_NAME_BYTES} bytes"
    return None


def check_inputs(
    manifest: Manifest, inputs: Sequence[InputFile], *, check_sources: bool = True
) -> list[Issue]:
    """Every problem with the given input files, with paths ``$.inputs.<name>``.

    ``check_sources=False`` skips the on-disk check of ``source_path`` (for files that are
    described by catalog metadata, including ``size``, and staged later).
    """
    specs = manifest.inputs
    issues: list[Issue] = []
    given: set[str] = set()
    for item in inputs:
        path = child("$.inputs", item.name)
        spec = specs.get(item.name)
        if spec is None:
            issues.append(Issue(path, "the manifest has no such input"))
            continue
        if spec.base != "file":
            issues.append(Issue(path, f"input has base {spec.base!r}; only files can be given"))
            continue
        if item.name in given:
            issues.append(Issue(path, "more than one file given for this input"))
            continue
        given.add(item.name)
        problem = file_name_problem(item.staged_name)
        if problem:
            issues.append(Issue(child(path, "location", "name"), problem))
            continue
        source = Path(item.source_path)
        if check_sources and not source.is_file():
            issues.append(Issue(path, f"source {source} is not a readable regular file"))
            continue
        issues.extend(_directive_issues(path, spec.directives, item))
    for name, spec in specs.items():
        if spec.base == "file" and not spec.optional and name not in given:
            issues.append(Issue(child("$.inputs", name), "required input file is missing"))
    return issues


def _directive_issues(
    path: str, directives: Mapping[str, Mapping[str, Any]], item: InputFile
) -> list[Issue]:
    issues = []
    for key, directive in directives.items():
        if key not in FILE_ATTRIBUTES:
            continue
        value = item.attribute(key)
        validator_cls = Draft4Validator
        try:
            Draft4Validator.check_schema(directive)
        except SchemaError:  # a draft-07-only directive
            validator_cls = Draft7Validator
        for error in validator_cls(directive).iter_errors(value):
            issues.append(Issue(child(path, key), f"file {key} {value!r}: {error.message}"))
    return issues
