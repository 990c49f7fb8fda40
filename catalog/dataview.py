"""Data View: the columns a search returns and how result rows are written out.

Columns are fields in the search syntax (``file.name``, ``session.label``,
``subject.info.age``, ``acquisition.id``) plus the pseudo-column ``path`` (the object's full
hierarchy path, e.g. ``g/p/sub/ses/acq/files/x.dcm``).  Each row is a dict keyed by the
column names as given; values are Python values (str, int, float, bool, None, list, dict,
timezone-aware UTC datetime).  Output formats: ``table`` (aligned text, buffered to size
the columns), ``jsonl`` (one JSON object per line) and ``csv`` (header line first).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy import DateTime, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from catalog import jsoncodec
from catalog.errors import InvalidInputError
from catalog.paths import format_path

PATH = "path"
FORMATS = ("table", "jsonl", "csv")
_CHAIN = ("group", "project", "subject", "session", "acquisition")
TABLE_CELL_WIDTH = 60

#: Columns shown when none are asked for, per result level.
DEFAULT_COLUMNS: dict[str, list[str]] = {
    "file": [
        "group.label",
        "project.label",
        "subject.label",
        "session.label",
        "acquisition.label",
        "file.name",
        "file.type",
        "file.size",
    ],
    **{
        level: [f"{above}.label" for above in _CHAIN[: i + 1]] + [f"{level}.id"]
        for i, level in enumerate(_CHAIN)
    },
    "analysis": ["path", "analysis.label", "analysis.id", "analysis.created"],
}


def path_label(level: str) -> str:
    """Result label of the hidden column carrying ``level``'s label for the ``path`` column."""
    return f"_path.{level}"


def path_levels(target: str) -> tuple[str, ...]:
    """Levels whose labels (hidden columns) make up the path of a ``target`` row."""
    if target == "file":
        return (*_CHAIN, "analysis", "file")
    if target == "analysis":
        return (*_CHAIN, "analysis")
    return _CHAIN[: _CHAIN.index(target) + 1]


def path_of(row: Mapping[Any, Any], target: str) -> str:
    """The hierarchy path of a result row from its hidden label columns."""
    labels = [row[path_label(lvl)] for lvl in _CHAIN if path_label(lvl) in row]
    return format_path(
        [label for label in labels if label is not None],
        analysis=row.get(path_label("analysis")),
        file_name=row.get(path_label("file")),
    )


def decode_json(text: str | None) -> Any:
    """JSON text as a Python value (None stays None), like :func:`json.loads` but without
    its cost for the scalars info fields mostly hold: escape-free strings and numbers."""
    if text is None:
        return None
    first = text[:1]
    if first == '"' and "\\" not in text:
        return text[1:-1]
    if first in _NUMBER_START and text[-1:].isdigit() and "_" not in text:
        if "." in text or "e" in text or "E" in text:
            return float(text)
        return int(text)
    return jsoncodec.loads(text)


_NUMBER_START = frozenset("-0123456789")


class JsonText(TypeDecorator[Any]):
    """A result column holding JSON text.  The type itself reads it as text; searches decode
    such columns a chunk of rows at a time (:mod:`catalog.query.rows`), which is several
    times cheaper than decoding value by value."""

    impl = String
    cache_ok = True


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp read back as an aware UTC datetime on every dialect (SQLite drops zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stamp: datetime = value
        if stamp.tzinfo is None:
            return stamp.replace(tzinfo=UTC)
        return stamp.astimezone(UTC)


def write_rows(rows: Iterable[dict[str, Any]], columns: list[str], fmt: str, out: TextIO) -> int:
    """Write ``rows`` (only ``columns``, in order) to ``out`` as ``fmt``; returns the count."""
    if fmt == "jsonl":
        count = 0
        for row in rows:
            record = {col: row.get(col) for col in columns}
            out.write(json.dumps(record, ensure_ascii=False, default=_json_default) + "\n")
            count += 1
        return count
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        count = 0
        for row in rows:
            writer.writerow([_cell(row.get(col)) for col in columns])
            count += 1
        return count
    if fmt == "table":
        return _write_table(rows, columns, out)
    raise InvalidInputError(f"unknown output format {fmt!r} (one of {', '.join(FORMATS)})")


def _write_table(rows: Iterable[dict[str, Any]], columns: list[str], out: TextIO) -> int:
    cells = [[_short(_cell(row.get(col))) for col in columns] for row in rows]
    widths = [max([len(col), *(len(r[i]) for r in cells)]) for i, col in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out.write(line(columns) + "\n")
    out.write(line(["-" * w for w in widths]) + "\n")
    for r in cells:
        out.write(line(r) + "\n")
    return len(cells)


def _short(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > TABLE_CELL_WIDTH:
        return text[: TABLE_CELL_WIDTH - 1] + "…"
    return text


def _cell(value: Any) -> str:
    """One value as text: '' for None, ISO timestamps, JSON for lists and dicts."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    return str(value)


def _json_default(value: Any) -> str:
    """Timestamps as ISO 8601; anything else JSON does not know as its text."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
