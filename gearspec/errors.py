"""Errors raised by gearspec, each carrying every problem found with its JSON path.

A path is written like ``$.config.threshold.default`` (``$`` is the document root,
``[0]`` an array index, ``['odd key']`` a key that is not a plain identifier).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from catalog.errors import GearbrokerError, InvalidInputError

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def json_path(parts: Iterable[str | int]) -> str:
    """Render a sequence of keys and indexes as a JSON path rooted at ``$``."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


def child(path: str, *parts: str | int) -> str:
    """Extend an already rendered path with more keys or indexes."""
    return path + json_path(parts)[1:]


@dataclass(frozen=True, order=True)
class Issue:
    """One problem in a document: where it is (JSON path) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class IssuesError(InvalidInputError):
    """Base for errors that report a list of issues together."""

    what = "document"

    def __init__(self, issues: Sequence[Issue], source: str | None = None) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues)
        self.source = source
        where = f" {source}" if source else ""
        lines = [f"invalid {self.what}{where} ({len(self.issues)} problem(s)):"]
        lines.extend(f"  {issue}" for issue in self.issues)
        super().__init__("\n".join(lines))


class ManifestError(IssuesError):
    """A gear manifest is malformed (schema or semantic problems)."""

    what = "gear manifest"


class InvocationError(IssuesError):
    """A gear invocation (user config, input files, destination) does not fit the manifest."""

    what = "gear invocation"


class MetadataError(IssuesError):
    """A gear's ``output/.metadata.json`` is malformed or writes outside the job's scope."""

    what = "gear output metadata"


class BoutiquesError(IssuesError):
    """A Boutiques descriptor cannot be read or converted at all."""

    what = "Boutiques descriptor"


class StagingError(GearbrokerError):
    """The run folder cannot be created or filled (filesystem problem)."""
