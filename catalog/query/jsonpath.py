"""Dialect-aware SQL for one key path inside a JSON column (``info``, ``classification``).

Key paths are validated against :data:`catalog.query.parser.KEY_SEGMENT` and then spelled as
SQL *literals*, never bound: SQLite and PostgreSQL only use an expression index when the
query spells the indexed expression the same way (``json_extract(info, '$.PatientID')`` /
``(info -> 'PatientID') ->> ...``).  Values are always bound by the caller.

Type guards (``is_type``) make comparisons type-strict on both dialects: a string literal
only matches JSON strings, a number only JSON numbers, so results agree on SQLite and
PostgreSQL and PostgreSQL casts never see a value they cannot convert.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Numeric,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB

from catalog.errors import QueryError
from catalog.query.parser import KEY_SEGMENT

#: Logical JSON types -> SQLite ``json_type`` / PostgreSQL ``jsonb_typeof`` names.
_SQLITE_TYPES = {
    "string": ("text",),
    "number": ("integer", "real"),
    "array": ("array",),
    "true": ("true",),
    "false": ("false",),
}
_PG_TYPES = {
    "string": "string",
    "number": "number",
    "array": "array",
    "true": "boolean",
    "false": "boolean",
}


def sql_literal(text: str) -> ColumnElement[Any]:
    """A constant spelled into the SQL; only for validated keys and fixed type names."""
    if "'" in text or "\\" in text or "\x00" in text:
        raise QueryError(f"refusing to spell {text!r} as an SQL literal")
    return literal_column(f"'{text}'")


def sqlite_path(keys: Sequence[str]) -> str:
    """``$.a.b``; segments other than plain identifiers are double-quoted (``$."a-b"``)."""
    parts = []
    for key in keys:
        if not KEY_SEGMENT.match(key):
            raise QueryError(f"invalid JSON key {key!r}")
        parts.append(key if key.replace("_", "").isalnum() and key.isascii() else f'"{key}"')
    return ".".join(["$", *parts])


class JsonPath:
    """SQL expressions for ``column`` at ``keys`` in ``dialect`` ("sqlite" or "postgresql").

    Empty ``keys`` address the whole column (used for ``tags`` arrays).
    """

    def __init__(self, column: ColumnElement[Any], keys: Sequence[str], dialect: str) -> None:
        self.column = column
        self.keys = tuple(keys)
        self.pg = dialect == "postgresql"
        self.path = sqlite_path(self.keys)

    def node(self) -> ColumnElement[Any]:
        """PostgreSQL: the jsonb value at the path (``col -> 'a' -> 'b'``)."""
        expr: ColumnElement[Any] = self.column
        for key in self.keys:
            expr = expr.op("->")(sql_literal(key))
        return expr

    def value(self) -> ColumnElement[Any]:
        """The scalar at the path: SQLite ``json_extract`` (typed), PostgreSQL text ``->>``.

        This is the expression :func:`catalog.indexes.create_info_index` indexes.
        """
        if not self.pg:
            return func.json_extract(self.column, sql_literal(self.path))
        if not self.keys:
            raise QueryError("a JSON value needs a key")
        expr: ColumnElement[Any] = self.column
        for key in self.keys[:-1]:
            expr = expr.op("->")(sql_literal(key))
        return expr.op("->>", return_type=String())(sql_literal(self.keys[-1]))

    def jtype(self) -> ColumnElement[Any]:
        if self.pg:
            return func.jsonb_typeof(self.node())
        return func.json_type(self.column, sql_literal(self.path))

    def is_type(self, logical: str) -> ColumnElement[bool]:
        """True when the value at the path has JSON type ``logical`` (see ``_SQLITE_TYPES``)."""
        if self.pg:
            return self.jtype() == sql_literal(_PG_TYPES[logical])
        names = _SQLITE_TYPES[logical]
        if len(names) == 1:
            return self.jtype() == sql_literal(names[0])
        return or_(*(self.jtype() == sql_literal(n) for n in names))

    def number(self) -> ColumnElement[Any]:
        """The value as a number where it is one; NULL (never an error) elsewhere."""
        if not self.pg:
            return self.value()
        return case((self.is_type("number"), cast(self.value(), Numeric)), else_=None)

    def output(self) -> ColumnElement[Any]:
        """The value as JSON text (NULL when absent), for Data View columns."""
        if self.pg:
            return cast(self.node(), String)
        return self.column.op("->", return_type=String())(sql_literal(self.path))

    def nested(self, leaf: Any) -> dict[str, Any]:
        """``{"a": {"b": leaf}}``: a document for PostgreSQL containment (``@>``)."""
        doc: Any = leaf
        for key in reversed(self.keys):
            doc = {key: doc}
        return dict(doc)

    def contains_doc(self, leaf: Any) -> ColumnElement[bool]:
        """PostgreSQL: the column contains ``leaf`` at the path (GIN-indexable ``@>``)."""
        return self.column.op("@>", return_type=Boolean())(literal(self.nested(leaf), type_=JSONB))

    def any_element(self, test: str, value: Any) -> ColumnElement[bool]:
        """Some element of the array at the path equals (``test="="``) or matches (``"=~"``,
        strings only) ``value``; false when the path holds no array.  The element type must
        match the literal's: a number finds numbers, a string finds strings."""
        want = "number" if isinstance(value, int | float) and test == "=" else "string"
        if self.pg:
            node = self.node()
            if self.keys:
                node = case((self.is_type("array"), node), else_=cast(sql_literal("[]"), JSONB))
            elems = func.jsonb_array_elements(node).table_valued("value").render_derived()
            elem_ok = func.jsonb_typeof(elems.c.value) == sql_literal(_PG_TYPES[want])
            text = elems.c.value.op("#>>", return_type=String())(sql_literal("{}"))
            scalar: ColumnElement[Any] = cast(text, Numeric) if want == "number" else text
        else:
            elems = func.json_each(self.column, sql_literal(self.path)).table_valued(
                "value", "type"
            )
            elem_ok = or_(*(elems.c.type == sql_literal(n) for n in _SQLITE_TYPES[want]))
            scalar = elems.c.value
        if test == "=~":
            match = scalar.regexp_match(value)
        elif want == "number":
            match = scalar == literal(value, Numeric) if self.pg else scalar == value
        else:
            match = scalar == value
        found = exists(select(literal_column("1")).select_from(elems).where(elem_ok, match))
        if self.keys and not self.pg:
            return and_(self.is_type("array"), found)
        return found

    def array_length(self) -> ColumnElement[Any]:
        """Length of the array at the path; 0 when it holds something else, NULL if absent."""
        if self.pg:
            return case((self.is_type("array"), func.jsonb_array_length(self.node())), else_=0)
        return func.json_array_length(self.column, sql_literal(self.path))
