"""Folder templates: the hierarchy of a folder ingest read from the files' paths.

A template gives one pattern per folder level and, last, a pattern for file names, e.g.
``{subject}/{session}/{acquisition}/*`` or ``sub-{subject}/ses-{session}/*.dcm``.  In a
pattern, ``{subject}``, ``{session}`` and ``{acquisition}`` capture a label, ``{_name}``
captures and ignores, ``*`` and ``?`` are globs; everything else is literal.  As YAML (like
Flywheel's ingest templates) a template is either that string under ``template:`` or a list
of levels ``[{pattern: "sub-{subject}"}, {pattern: "ses-{session}"}, ...]``.  Files go into
the deepest level the template (or an override) names; paths of another depth, or that do
not match, are not ingested.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from catalog.errors import InvalidInputError

LEVELS = ("subject", "session", "acquisition")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TemplateError(InvalidInputError):
    """A folder template is malformed."""


@dataclass(frozen=True)
class Placement:
    """Where a file goes: labels down to the deepest named level, and its file name."""

    subject: str
    session: str | None
    acquisition: str | None
    name: str


@dataclass(frozen=True)
class FolderTemplate:
    """A compiled template: one regex per path segment (the last one matches file names)."""

    text: str
    segments: tuple[re.Pattern[str], ...]

    def place(self, key: str, overrides: Mapping[str, str | None]) -> Placement | None:
        """Where ``key`` goes, or None when it does not fit the template."""
        parts = key.split("/")
        if len(parts) != len(self.segments):
            return None
        labels: dict[str, str] = {}
        for part, regex in zip(parts, self.segments, strict=True):
            match = regex.fullmatch(part)
            if match is None:
                return None
            for name, value in match.groupdict().items():
                if not name.startswith("_"):
                    labels[name] = value.strip()
        for level in LEVELS:
            if overrides.get(level):
                labels[level] = str(overrides[level])
        if not labels.get("subject") or any(value == "" for value in labels.values()):
            return None
        session = labels.get("session")
        acquisition = labels.get("acquisition") if session else None
        return Placement(labels["subject"], session, acquisition, parts[-1])


def compile_template(text: str) -> FolderTemplate:
    """Compile a ``/``-separated template string; raises TemplateError."""
    segments = [seg for seg in text.strip().strip("/").split("/")]
    if not segments or any(not seg for seg in segments):
        raise TemplateError(f"empty segment in template {text!r}")
    seen: set[str] = set()
    compiled = []
    for index, segment in enumerate(segments):
        names = _PLACEHOLDER.findall(segment)
        if index == len(segments) - 1 and any(not n.startswith("_") for n in names):
            raise TemplateError(f"the last segment of {text!r} matches file names: no levels")
        for name in names:
            if not name.startswith("_") and name not in LEVELS:
                raise TemplateError(f"unknown placeholder {{{name}}}: use {', '.join(LEVELS)}")
            if name in seen:
                raise TemplateError(f"placeholder {{{name}}} appears twice in {text!r}")
            seen.add(name)
        compiled.append(re.compile(_segment_regex(segment)))
    return FolderTemplate(text, tuple(compiled))


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(segment):
        out.append(_glob(segment[pos : match.start()]))
        out.append(f"(?P<{match.group(1)}>[^/]+?)")
        pos = match.end()
    out.append(_glob(segment[pos:]))
    return "".join(out)


def _glob(text: str) -> str:
    return "".join("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in text)


def load_template(value: str) -> FolderTemplate:
    """A template from a ``.yaml``/``.yml`` file or given inline."""
    if value.endswith((".yaml", ".yml")):
        try:
            data = yaml.safe_load(Path(value).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise TemplateError(f"cannot read template {value}: {exc}") from exc
        return compile_template(_from_yaml(data))
    return compile_template(value)


def _from_yaml(data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("template"), str):
        return str(data["template"])
    if isinstance(data, list) and all(isinstance(i, dict) and "pattern" in i for i in data):
        patterns = [str(item["pattern"]) for item in data]
        if any(name in LEVELS for name in _PLACEHOLDER.findall(patterns[-1])):
            patterns.append("*")
        return "/".join(patterns)
    raise TemplateError("a template file holds 'template: <string>' or a list of {pattern: ...}")
