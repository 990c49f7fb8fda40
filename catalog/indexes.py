"""Optional indexes that make searches on chosen info keys fast.

:func:`create_info_index` indexes exactly the expression the query compiler emits for a
field (:meth:`catalog.query.jsonpath.JsonPath.value`), so the planner can use it for ``=``,
ranges and ``exists`` on that key: ``json_extract(info, '$.PatientID')`` on SQLite,
``(info ->> 'PatientID')`` plus its guarded numeric cast on PostgreSQL.  On PostgreSQL,
:func:`create_gin_indexes` adds GIN (``jsonb_path_ops``) indexes that serve the containment
tests the compiler emits for equality on any info key, classification and tags.
"""

from __future__ import annotations

import hashlib
import re

from sqlalchemy import Column, Engine, Index, MetaData, Table, text
from sqlalchemy.schema import CreateIndex
from sqlalchemy.sql.elements import Grouping

from catalog.errors import InvalidInputError
from catalog.models import JSONType
from catalog.query.jsonpath import JsonPath
from catalog.query.parser import FILE, AttrKind, parse_field

_MAX_NAME = 63  # PostgreSQL identifier limit
_GIN_COLUMNS = {"files": ("info", "classification", "tags"), "containers": ("info", "tags")}


def info_index_name(table: str, keys: tuple[str, ...], suffix: str = "") -> str:
    """``ix_<table>_info_<keys><suffix>``, shortened with a hash when too long for
    PostgreSQL."""
    slug = re.sub(r"[^A-Za-z0-9_]", "_", "__".join(keys))
    name = f"ix_{table}_info_{slug}"
    if len(name) + len(suffix) <= _MAX_NAME:
        return name + suffix
    digest = hashlib.sha256(".".join(keys).encode()).hexdigest()[:10]
    return f"{name[: _MAX_NAME - 11 - len(suffix)]}_{digest}{suffix}"


def create_info_index(engine: Engine, field: str) -> str:
    """Create (if missing) the expression index for an info field such as
    ``file.info.PatientID`` or ``session.info.age``; returns the index name.

    Container fields index the shared ``containers`` table (all levels).  On PostgreSQL a
    second index ``<name>_num`` covers numeric comparisons (SQLite's one index serves both).
    """
    parsed = parse_field(field.strip())
    if parsed.kind is not AttrKind.JSON:
        raise InvalidInputError(f"{field!r} is not an info field (e.g. file.info.PatientID)")
    table_name = "files" if parsed.level == FILE else "containers"
    name = info_index_name(table_name, parsed.keys)
    info = Column("info", JSONType)
    path = JsonPath(info, parsed.keys, engine.dialect.name)
    indexes = [Index(name, path.value())]
    if engine.dialect.name == "postgresql":
        # PostgreSQL wants a parenthesised expression here.
        numeric = Grouping(path.number())
        indexes.append(Index(info_index_name(table_name, parsed.keys, "_num"), numeric))
    # A private Table, so the indexes are not added to the models' shared metadata.
    Table(table_name, MetaData(), info, *indexes)
    with engine.begin() as conn:
        for index in indexes:
            conn.execute(CreateIndex(index, if_not_exists=True))
    return name


def create_gin_indexes(engine: Engine) -> list[str]:
    """PostgreSQL only: GIN indexes on the JSONB columns searched by containment; returns
    their names (an empty list on other databases).  Idempotent."""
    if engine.dialect.name != "postgresql":
        return []
    names = []
    with engine.begin() as conn:
        for table, columns in _GIN_COLUMNS.items():
            for column in columns:
                name = f"ix_{table}_{column}_gin"
                conn.execute(
                    text(
                        f"CREATE INDEX IF NOT EXISTS {name} ON {table} "
                        f"USING gin ({column} jsonb_path_ops)"
                    )
                )
                names.append(name)
    return names
