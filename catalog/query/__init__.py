"""Catalog search: a small query language compiled to one SQL statement with bound parameters.

Example::

    file.type = dicom and session.info.age > 30 and acquisition.label =~ "T1"

**Fields** are ``<level>.<attribute>``; levels: ``group``, ``project``, ``subject``,
``session``, ``acquisition``, ``analysis``, ``file``.

* every container: ``label``, ``id``, ``created``, ``modified``, ``tags``, ``info.<key>...``
* ``file``: ``name``, ``type``, ``modality``, ``size``, ``mimetype``, ``sha256``, ``version``,
  ``origin_type``, ``id``, ``created``, ``modified``, ``tags``, ``info.<key>...``,
  ``classification.<key>`` (classification maps keys to lists, e.g. ``{"Measurement": ["T1"]}``)
* info keys are dotted paths (``session.info.subject_raw.age``); each key is letters, digits,
  ``_`` and ``-`` and must not start with ``-``.  Level and attribute names are case-insensitive,
  keys are not.

**Operators**: ``=  !=  <  <=  >  >=``, ``=~`` / ``!~`` (regular expression search, Python
``re`` syntax; keep to the subset PostgreSQL shares), ``contains`` (a tag / classification
list holds the value; a text field or info string contains it as a substring; an info list
holds it), ``in [v1, v2, ...]`` (equal to any), postfix ``exists`` (set and not null; for tags
and classification: a non-empty list).  ``not`` may precede ``contains``, ``in`` and
``exists``: ``session.info.age not exists``.  Combine with ``and``, ``or``, ``not`` and
parentheses (``and`` binds tighter than ``or``).  Keywords are case-insensitive.  An empty
query matches every object.

**Values**: quoted strings (``'..'`` or ``".."``; escapes ``\\\\ \\' \\" \\n \\t \\r
\\uXXXX``, any other backslash is kept, so ``"^T1\\w+"`` works), bare words (``dicom``,
``T1w``, ``2024-05-01``), numbers, ``true``, ``false``, ``null``.

**Typing**: comparisons on info fields are type-strict: a number literal compares
numerically and ignores values that are not numbers, a text literal (quoted or bare) only
matches strings (``"30"`` does not match the number 30), ``true``/``false`` match booleans.
On text attributes a number is read as typed (``subject.label = 001``).  ``created`` and
``modified`` take ISO dates or date-times (UTC unless an offset is given); a bare date stands
for the whole day (``= 2024-05-01`` is that day, ``> 2024-05-01`` is after it).  ``= null``
means ``not exists`` and ``!= null`` means ``exists``.  ``!=``, ``!~`` and ``not`` are plain
negations: ``file.info.x != 5`` also matches files without ``x``.

**Levels**: a search returns one row per object of the *result level* (``file`` by default;
only current file versions).  Conditions on a level above it test the one ancestor (a file's
session, an acquisition's project; for files, ``analysis`` is the analysis the file belongs to,
so ``analysis.id exists`` selects analysis outputs).  Conditions on a level below it (the
sessions' acquisitions or files, a container's analyses) ask whether *some* object below
matches; conditions on that level joined by ``and``/``or`` without a ``not`` between them must
hold for the same object, and ``not (acquisition.label = T1)`` means that no acquisition
matches (while ``acquisition.label != T1`` means that some acquisition is labelled otherwise).
A container's analyses are those attached to it or to any container below it; an analysis'
files are its outputs.  Columns (Data View) may name the result level and levels above it.
Results are limited to the groups and projects the user can read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.engine import Dialect

from catalog import dataview
from catalog.errors import DatabaseError, QueryError
from catalog.query import prepared
from catalog.query.compiler import compile_search
from catalog.query.functions import install_sqlite_functions
from catalog.query.lexer import QuerySyntaxError
from catalog.query.parser import LEVELS, parse, parse_field

__all__ = [
    "LEVELS",
    "QuerySyntaxError",
    "columns_for",
    "compile_search",
    "install_sqlite_functions",
    "parse",
    "parse_field",
    "prepare_search",
    "search_chunks",
]

YIELD_PER = 500
_PG_INVALID_REGEX = "2201B"


def columns_for(target: str = "file", columns: Sequence[str] | None = None) -> list[str]:
    """The Data View column names a search returns: ``columns`` (trimmed, de-duplicated) or
    the defaults for ``target``; raises QueryError for an unknown result level."""
    if columns is None:
        if target not in dataview.DEFAULT_COLUMNS:
            raise QueryError(f"unknown result level {target!r} (one of {', '.join(LEVELS)})")
        return list(dataview.DEFAULT_COLUMNS[target])
    names = [c.strip() for c in columns]
    if not names or not all(names):
        raise QueryError("give at least one column name, none empty")
    return list(dict.fromkeys(names))


def prepare_search(
    dialect: Dialect,
    readable: list[int] | None,
    query: str,
    target: str = "file",
    columns: Sequence[str] | None = None,
    limit: int | None = None,
) -> prepared.Prepared:
    """The search for ``target`` objects matching ``query`` within ``readable`` (see
    :func:`catalog.access.readable_scope_ids`), compiled for ``dialect`` and ready to run with
    :func:`search_chunks`.  Raises QueryError.  Memoized."""
    names = columns_for(target, columns)
    stmt = compile_search(query, target, names, dialect.name, readable, limit)
    return prepared.prepare(stmt, dialect, tuple(names), target)


def search_chunks(driver_conn: Any, statement: prepared.Prepared) -> Iterator[list[dict[str, Any]]]:
    """The rows of a :func:`prepare_search` statement, ordered by id, in lists of up to
    :data:`YIELD_PER` rows (``itertools.chain.from_iterable`` makes them one stream of rows
    without a Python step per row).  Each row is a dict keyed by :func:`columns_for` names.
    ``driver_conn`` is a DBAPI connection of the statement's dialect (see
    :mod:`catalog.query.prepared`); it must stay open while the iterator is consumed.
    """
    try:
        yield from prepared.run(driver_conn, statement, YIELD_PER)
    except statement.driver_error as exc:
        if getattr(exc, "sqlstate", None) == _PG_INVALID_REGEX:
            raise QueryError(f"invalid regular expression for PostgreSQL: {exc}") from exc
        raise DatabaseError(f"search failed in the catalog database: {exc}") from exc
