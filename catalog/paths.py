"""Hierarchy paths: ``group/project/subject/session/acquisition[/files/NAME]``.

Grammar (segments separated by ``/``)::

    path      := container ("/files/" name)?
    container := (segment ("/" segment){0,4} | "<id:N>" ...) ("/analyses/" segment)?

* Container segments fill the levels group, project, subject, session, acquisition in order.
* ``files/NAME`` addresses a file of the container before it; ``analyses/LABEL`` an analysis.
* ``<id:N>`` (Flywheel's syntax) addresses a container by id and may start a path.
* Labels are percent-escaped: ``%`` -> ``%25``, ``/`` -> ``%2F``, a leading ``<`` -> ``%3C``,
  and a label spelled like a keyword (``files``, ``analyses``) has its first character escaped,
  so every label round-trips through :func:`escape_label` / :func:`unescape_label`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from catalog.errors import InvalidInputError, PathError
from catalog.models import HIERARCHY, Level

KEYWORDS = frozenset({"files", "analyses"})
_ID_SEGMENT = re.compile(r"^<id:(\d+)>$")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_GROUP_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAX_LABEL = 255
MAX_FILE_NAME = 1024


@dataclass(frozen=True)
class ParsedPath:
    """A parsed path: container labels by level, or an id anchor, plus optional parts."""

    anchor_id: int | None = None
    labels: tuple[str, ...] = ()
    analysis: str | None = None
    file_name: str | None = None
    extra: tuple[str, ...] = field(default=())

    @property
    def levels(self) -> tuple[Level, ...]:
        """The levels that ``labels`` fill (only when the path is not anchored by id)."""
        return HIERARCHY[: len(self.labels)]


def escape_label(label: str) -> str:
    """Escape one label so it can stand as a path segment."""
    out = label.replace("%", "%25").replace("/", "%2F")
    if out.startswith("<") or out in KEYWORDS:
        out = f"%{ord(out[0]):02X}{out[1:]}"
    return out


def unescape_label(segment: str) -> str:
    """Inverse of :func:`escape_label`; a stray ``%`` is an error."""
    if "%" in _ESCAPE.sub("", segment):
        raise PathError(f"bad escape in path segment {segment!r}: write % as %25")
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), segment)


def validate_label(label: str, level: Level | str) -> str:
    """Return ``label`` if it is acceptable for ``level``, else raise InvalidInputError."""
    lvl = Level(level)
    if not label or label != label.strip():
        raise InvalidInputError(f"invalid {lvl.value} label {label!r}: empty or padded")
    if len(label) > MAX_LABEL:
        raise InvalidInputError(f"invalid {lvl.value} label: longer than {MAX_LABEL} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in label):
        raise InvalidInputError(f"invalid {lvl.value} label {label!r}: control characters")
    if label in (".", ".."):
        raise InvalidInputError(f"invalid {lvl.value} label {label!r}")
    if lvl is Level.GROUP and not _GROUP_ID.match(label):
        raise InvalidInputError(
            f"invalid group id {label!r}: use lowercase letters, digits, '_', '.', '-' (max 64)"
        )
    return label


def validate_file_name(name: str) -> str:
    """File names are single path components: no ``/``, NUL, ``.``/``..``, control chars."""
    if not name or len(name) > MAX_FILE_NAME:
        raise InvalidInputError(f"invalid file name {name!r}: empty or too long")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise InvalidInputError(f"invalid file name {name!r}: must be a single path component")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidInputError(f"invalid file name {name!r}: control characters")
    return name


def parse_path(path: str) -> ParsedPath:
    """Parse a path string; raises PathError on malformed input."""
    text = path.removeprefix("fw://").strip("/")
    if not text:
        return ParsedPath()
    if "\x00" in text:
        raise PathError("path contains a NUL byte")
    raw = text.split("/")
    anchor: int | None = None
    labels: list[str] = []
    i = 0
    match = _ID_SEGMENT.match(raw[0])
    if match:
        anchor = int(match.group(1))
        i = 1
    while i < len(raw) and raw[i] not in KEYWORDS:
        if _ID_SEGMENT.match(raw[i]):
            raise PathError(f"{path!r}: <id:N> may only start a path")
        if anchor is not None:
            raise PathError(f"{path!r}: after <id:N> only files/ or analyses/ may follow")
        if raw[i] == "":
            raise PathError(f"{path!r}: empty segment")
        labels.append(unescape_label(raw[i]))
        i += 1
    if len(labels) > len(HIERARCHY):
        raise PathError(f"{path!r}: deeper than group/project/subject/session/acquisition")
    analysis: str | None = None
    file_name: str | None = None
    rest = raw[i:]
    if rest[:1] == ["analyses"]:
        if len(rest) < 2 or not rest[1]:
            raise PathError(f"{path!r}: analyses/ needs a label")
        if anchor is None and not labels:
            raise PathError(f"{path!r}: analyses/ needs a container before it")
        analysis = unescape_label(rest[1])
        rest = rest[2:]
    if rest[:1] == ["files"]:
        if len(rest) != 2 or not rest[1]:
            raise PathError(f"{path!r}: files/ needs exactly one file name")
        if anchor is None and len(labels) < 2:
            raise PathError(f"{path!r}: files live in projects and below")
        file_name = unescape_label(rest[1])
        rest = []
    if rest:
        raise PathError(f"{path!r}: unexpected {'/'.join(rest)!r}")
    return ParsedPath(
        anchor_id=anchor, labels=tuple(labels), analysis=analysis, file_name=file_name
    )


def format_path(
    labels: tuple[str, ...] | list[str],
    analysis: str | None = None,
    file_name: str | None = None,
) -> str:
    """Build a path from container labels (top-down), with optional analysis and file."""
    parts = [escape_label(label) for label in labels]
    if analysis is not None:
        parts += ["analyses", escape_label(analysis)]
    if file_name is not None:
        parts += ["files", escape_label(file_name)]
    return "/".join(parts)
