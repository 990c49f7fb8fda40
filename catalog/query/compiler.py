"""Compile a parsed query into one SQLAlchemy Core ``SELECT`` (semantics in :mod:`catalog.query`).

The result level (``target``) is the row source: ``files AS file`` (current versions only) or
``containers AS <level>``.  Levels above the target are LEFT JOINed on the target's ancestor
ids; conditions on a level below it become ``EXISTS`` subqueries correlated on the target's
id.  Every literal is a bound parameter; only validated JSON keys and fixed names (levels,
JSON type names) are spelled into the SQL.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, NoReturn

from sqlalchemy import (
    Boolean,
    ColumnElement,
    FromClause,
    Numeric,
    Select,
    String,
    and_,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    type_coerce,
)

from catalog import dataview
from catalog.errors import QueryError
from catalog.models import Container, File
from catalog.query import values
from catalog.query.jsonpath import JsonPath, sql_literal
from catalog.query.lexer import QuerySyntaxError
from catalog.query.parser import (
    ANALYSIS,
    FILE,
    LEVELS,
    And,
    AttrKind,
    Condition,
    Field,
    Node,
    Or,
    Value,
    parse,
    parse_field,
)
from catalog.query.structure import HIERARCHY, below_group, relation, requires

_ORDER_OPS = ("<", "<=", ">", ">=")
_CONTAINERS = Container.__table__
_FILES = File.__table__

Alias = FromClause

# One alias per level, shared by every statement: building an alias' column collection is
# the costliest step of compiling a search, so it is done once here.  A level is either
# joined (above the result level) or tested in EXISTS subqueries (below it), never both, so
# sharing cannot make a subquery correlate with the wrong table.
_ALIASES: dict[str, Alias] = {
    level: (_FILES if level == FILE else _CONTAINERS).alias(level) for level in LEVELS
}
for _alias in _ALIASES.values():
    _alias.c  # noqa: B018 - populate the column collection now, not on a first search


def _table(level: str) -> Alias:
    return _ALIASES[level]


def _chain_links(levels: set[str], by_parent: bool) -> dict[tuple[str, str], ColumnElement[bool]]:
    """For each two inner-joined hierarchy levels with none of ``levels`` between them, the
    condition that the lower one lies under the upper one, keyed (upper, lower).

    Both are already fixed by the target row's ancestor ids, so the result is unchanged,
    but the planner learns how they relate: for ``subject.label = X and session.label =
    "ses-02"`` it finds X's sessions instead of testing the subject of every file of every
    "ses-02" session (1 ms instead of 170-220 on a million files; the benchmark's join
    search: 4 ms instead of 24-32).  The lower level names the upper one by its ancestor-id
    column, or with ``by_parent`` (PostgreSQL) a parent by ``parent_id``, which PostgreSQL
    probes through ix_containers_parent_level; SQLite's planner, offered that index, chose
    to scan every file for ``project.label = X and subject.info.age > 75`` (300 ms, not 6)."""
    chain = [level for level in HIERARCHY if level in levels]
    links: dict[tuple[str, str], ColumnElement[bool]] = {}
    for upper, lower in itertools.pairwise(chain):
        parent = by_parent and HIERARCHY.index(lower) - HIERARCHY.index(upper) == 1
        column = _ALIASES[lower].c["parent_id" if parent else f"{upper}_id"]
        links[(upper, lower)] = column == _ALIASES[upper].c.id
    return links


class _Compiler:
    def __init__(self, query: str, target: str, dialect: str) -> None:
        self.query = query
        self.target = target
        self.pg = dialect == "postgresql"
        self.dialect = dialect
        self.base = _table(target)
        self.joins: dict[str, Alias] = {}

    # -- tables ------------------------------------------------------------------------------

    def joined(self, level: str) -> Alias:
        """The row source of ``level`` for the target row (the base or a joined ancestor)."""
        if level == self.target:
            return self.base
        if level not in self.joins:
            self.joins[level] = _table(level)
        return self.joins[level]

    def from_clause(self, node: Node | None) -> FromClause:
        """The base joined to the ancestors in use: an INNER JOIN where the condition cannot
        hold without that ancestor (so the planner may start from its indexes), else LEFT.
        Inner-joined ancestors are also linked to each other (see :func:`_chain_links`)."""
        inner = {level for level in self.joins if node is not None and requires(node, level)}
        links = _chain_links(inner, by_parent=self.pg)
        src: FromClause = self.base
        placed: set[str] = set()
        for level, alias in self.joins.items():
            if level == ANALYSIS and self.target == FILE:
                is_analysis = alias.c.level == sql_literal(level)
                on = and_(alias.c.id == self.base.c.container_id, is_analysis)
            else:
                # The level test is redundant for the join (ancestor ids point at containers
                # of that level) but lets the planner use ix_containers_level_label for a
                # condition such as project.label = X.  On a LEFT join it would only add
                # work (SQLite builds a Bloom filter for it: +17% on a 10,000-row export).
                on = alias.c.id == self.base.c[f"{level}_id"]
                if level in inner:
                    # Links to levels joined before this one (an ON clause may name only those).
                    linked = [
                        link
                        for pair, link in links.items()
                        if level in pair and set(pair) - {level} <= placed
                    ]
                    on = and_(on, alias.c.level == sql_literal(level), *linked)
                    placed.add(level)
            src = src.join(alias, on) if level in inner else src.outerjoin(alias, on)
        return src

    def below_source(self, level: str) -> tuple[Alias, ColumnElement[bool]]:
        """The alias of ``level`` for an EXISTS subquery and its correlation with the target
        row."""
        alias = _table(level)
        if level == FILE:
            link = (
                alias.c.container_id == self.base.c.id
                if self.target == ANALYSIS
                else alias.c[f"{self.target}_id"] == self.base.c.id
            )
            return alias, and_(alias.c.current, link)
        link = alias.c[f"{self.target}_id"] == self.base.c.id
        return alias, and_(alias.c.level == sql_literal(level), link)

    def ancestor_id(self, field: Field) -> bool:
        """``<level>.id`` of an ancestor in the chain: read from the target row, no join."""
        return (
            field.attr == "id"
            and field.level in HIERARCHY
            and relation(self.target, field.level) == "above"
        )

    def column(self, field: Field, table: Alias) -> ColumnElement[Any]:
        """The plain column of ``field``."""
        if self.ancestor_id(field):
            return self.base.c[f"{field.level}_id"]
        return table.c[field.attr]

    def scope(self, field: Field) -> Alias:
        """The table a field resolves to outside EXISTS subqueries (ancestor ids: the base)."""
        if relation(self.target, field.level) == "below":
            raise QuerySyntaxError(
                f"{field.text} is below the result level {self.target}: "
                "it can be searched on but not shown as a column",
                self.query,
                field.pos,
            )
        return self.base if self.ancestor_id(field) else self.joined(field.level)

    # -- boolean structure -------------------------------------------------------------------

    def compile(self, node: Node) -> ColumnElement[bool]:
        level = below_group(node, self.target)
        if level is not None:
            alias, link = self.below_source(level)
            inner = self.local(node, alias)
            return exists(select(literal_column("1")).select_from(alias).where(link, inner))
        if isinstance(node, Condition):
            return self.condition(node, self.scope(node.field))
        if isinstance(node, And):
            return and_(*(self.compile(item) for item in node.items))
        if isinstance(node, Or):
            return or_(*(self.compile(item) for item in node.items))
        return _negate(self.compile(node.item))

    def local(self, node: Node, alias: Alias) -> ColumnElement[bool]:
        """Compile a not-free subtree whose conditions all use ``alias``."""
        if isinstance(node, Condition):
            return self.condition(node, alias)
        if isinstance(node, And):
            return and_(*(self.local(item, alias) for item in node.items))
        if isinstance(node, Or):
            return or_(*(self.local(item, alias) for item in node.items))
        raise QueryError("internal: 'not' inside a below-level group")

    # -- conditions --------------------------------------------------------------------------

    def condition(self, cond: Condition, table: Alias) -> ColumnElement[bool]:
        if cond.op == "in":
            expr = or_(*(self.atom(cond, "=", v, table) for v in cond.values))
        elif cond.op == "exists":
            expr = self.exists(cond.field, table)
        else:
            expr = self.atom(cond, cond.op, cond.values[0], table)
        return _negate(expr) if cond.negated else expr

    def atom(self, cond: Condition, op: str, value: Value, table: Alias) -> ColumnElement[bool]:
        field = cond.field
        if value.kind == "null":
            if op != "=":
                self.fail(f"null only works with =, != and in ({field.text})", value.pos)
            return not_(self.exists(field, table))
        if op in ("=~", "contains") and field.kind in (AttrKind.INTEGER, AttrKind.TIME):
            self.fail(f"{op} does not apply to {field.text}", cond.pos)
        if op in _ORDER_OPS and field.kind in (AttrKind.TAGS, AttrKind.CLASSIFICATION):
            self.fail(f"{op} does not apply to the list {field.text}", cond.pos)
        if field.kind is AttrKind.TEXT:
            return self.text_atom(self.column(field, table), op, value, field)
        if field.kind is AttrKind.INTEGER:
            num = values.number(value, field, self.query)
            return _compare(self.column(field, table), op, literal(num))
        if field.kind is AttrKind.TIME:
            return self.time_atom(table.c[field.attr], op, value, field)
        if field.kind is AttrKind.TAGS:
            return self.list_atom(JsonPath(table.c.tags, (), self.dialect), op, value, field)
        path = JsonPath(table.c[field.attr], field.keys, self.dialect)
        if field.kind is AttrKind.CLASSIFICATION:
            return self.list_atom(path, op, value, field)
        return self.json_atom(path, op, value, field)

    def text_atom(
        self, col: ColumnElement[Any], op: str, value: Value, field: Field
    ) -> ColumnElement[bool]:
        if op == "=~":
            return col.regexp_match(values.regex(value, field, self.query))
        raw = values.text(value, field, self.query)
        if op == "contains":
            return self.substring(col, raw)
        return _compare(self.ordered(col) if op in _ORDER_OPS else col, op, literal(raw, String))

    def time_atom(
        self, col: ColumnElement[Any], op: str, value: Value, field: Field
    ) -> ColumnElement[bool]:
        start, end = values.timestamp(value, field, self.query)
        if end is None:
            return _compare(col, op, literal(start, col.type))
        lo, hi = literal(start, col.type), literal(end, col.type)
        bounds: dict[str, Callable[[], ColumnElement[bool]]] = {
            "=": lambda: and_(col >= lo, col < hi),
            "<": lambda: col < lo,
            "<=": lambda: col < hi,
            ">": lambda: col >= hi,
            ">=": lambda: col >= lo,
        }
        return bounds[op]()

    def list_atom(self, path: JsonPath, op: str, value: Value, field: Field) -> ColumnElement[bool]:
        if op == "=~":
            return path.any_element("=~", values.regex(value, field, self.query))
        if value.kind == "bool":
            self.fail(f"{field.text} holds text: quote {value.raw!r}", value.pos)
        raw = values.text(value, field, self.query)
        if self.pg and path.keys:
            return path.contains_doc([raw])
        return path.any_element("=", raw)

    def json_atom(self, path: JsonPath, op: str, value: Value, field: Field) -> ColumnElement[bool]:
        if op == "=~":
            pattern = values.regex(value, field, self.query)
            return and_(path.is_type("string"), path.value().regexp_match(pattern))
        if value.kind == "bool":
            if op != "=":
                self.fail(f"{op} does not apply to true/false", value.pos)
            if self.pg:
                return path.contains_doc(value.raw == "true")
            return path.jtype() == literal(value.raw, String)
        if op == "contains":
            raw = values.text(value, field, self.query)
            item: Any = values.number(value, field, self.query) if value.kind == "number" else raw
            in_string = and_(path.is_type("string"), self.substring(path.value(), raw))
            return or_(path.any_element("=", item), in_string)
        if value.kind == "number":
            num = values.number(value, field, self.query)
            if self.pg:
                compared = _compare(path.number(), op, literal(num, Numeric))
                return and_(compared, path.contains_doc(num)) if op == "=" else compared
            compared = _compare(path.value(), op, literal(num))
            if op == "=" and num not in (0, 1):
                return compared  # see below; SQLite reads true/false as 1/0
            return and_(compared, path.is_type("number"))
        raw = values.text(value, field, self.query)
        col = self.ordered(path.value()) if op in _ORDER_OPS else path.value()
        compared = _compare(col, op, literal(raw, String))
        if self.pg and op == "=":
            return and_(compared, path.contains_doc(raw))
        if op == "=" and raw[:1] not in ("{", "["):
            # SQLite's json_extract gives numbers as numbers, which never equal text, and
            # objects and arrays as JSON text starting with { or [: no other value equals
            # this literal, so the type check (a second parse of the document) is not needed.
            return compared
        return and_(compared, path.is_type("string"))

    def exists(self, field: Field, table: Alias) -> ColumnElement[bool]:
        """``<field> exists``: non-null column / JSON value, non-empty tag or class list."""
        if field.kind is AttrKind.TAGS:
            return JsonPath(table.c.tags, (), self.dialect).array_length() > 0
        if field.kind is AttrKind.CLASSIFICATION:
            return JsonPath(table.c[field.attr], field.keys, self.dialect).array_length() > 0
        if field.kind is AttrKind.JSON:
            return JsonPath(table.c[field.attr], field.keys, self.dialect).value().is_not(None)
        return self.column(field, table).is_not(None)

    def substring(self, col: ColumnElement[Any], needle: str) -> ColumnElement[bool]:
        finder = func.strpos if self.pg else func.instr
        return finder(col, literal(needle, String)) > 0

    def ordered(self, col: ColumnElement[Any]) -> ColumnElement[Any]:
        """Byte-order text comparison on PostgreSQL, as SQLite does by default."""
        return col.collate("C") if self.pg else col

    def fail(self, message: str, pos: int) -> NoReturn:
        raise QuerySyntaxError(message, self.query, pos)

    # -- output columns ----------------------------------------------------------------------

    def output(self, name: str) -> list[ColumnElement[Any]]:
        """The SELECT expressions for one Data View column (``path`` needs several)."""
        if name == dataview.PATH:
            cols: list[ColumnElement[Any]] = []
            for level in dataview.path_levels(self.target):
                table = self.joined(level)
                label = table.c.name if level == FILE else table.c.label
                cols.append(label.label(dataview.path_label(level)))
            return cols
        field = parse_field(name)
        table = self.scope(field)
        if field.kind in (AttrKind.JSON, AttrKind.CLASSIFICATION):
            path = JsonPath(table.c[field.attr], field.keys, self.dialect)
            expr: ColumnElement[Any] = type_coerce(path.output(), dataview.JsonText)
        elif field.kind is AttrKind.TIME:
            expr = type_coerce(table.c[field.attr], dataview.UtcDateTime)
        else:
            expr = self.column(field, table)
        return [expr.label(name)]


def _compare(col: ColumnElement[Any], op: str, value: ColumnElement[Any]) -> ColumnElement[bool]:
    ops: dict[str, Callable[[], ColumnElement[bool]]] = {
        "=": lambda: col == value,
        "<": lambda: col < value,
        "<=": lambda: col <= value,
        ">": lambda: col > value,
        ">=": lambda: col >= value,
    }
    return ops[op]()


def _negate(expr: ColumnElement[bool]) -> ColumnElement[bool]:
    """Two-valued NOT: an unknown (NULL) comparison counts as false before negation."""
    return not_(func.coalesce(expr, false(), type_=Boolean))


def compile_search(
    query: str,
    target: str = FILE,
    columns: Sequence[str] | None = None,
    dialect: str = "sqlite",
    readable: list[int] | None = None,
    limit: int | None = None,
) -> Select[Any]:
    """The SELECT for ``query``: one row per visible ``target`` object, ordered by id.

    ``columns`` (default :data:`catalog.dataview.DEFAULT_COLUMNS`) are labelled by their names;
    ``path`` adds hidden ``_path.<level>`` label columns (see :func:`catalog.dataview.path_of`).
    ``readable`` restricts rows to those groups/projects (None: everything).  Raises
    QueryError (QuerySyntaxError with a position for problems inside the query).  Statements
    are immutable and memoized: the same arguments return the same object, which also lets
    SQLAlchemy reuse its compiled form.
    """
    return _compile_cached(
        query,
        target,
        None if columns is None else tuple(columns),
        dialect,
        None if readable is None else tuple(readable),
        limit,
    )


@lru_cache(maxsize=256)
def _compile_cached(
    query: str,
    target: str,
    columns: tuple[str, ...] | None,
    dialect: str,
    readable: tuple[int, ...] | None,
    limit: int | None,
) -> Select[Any]:
    if target not in LEVELS:
        raise QueryError(f"unknown result level {target!r} (one of {', '.join(LEVELS)})")
    if dialect not in ("sqlite", "postgresql"):
        raise QueryError(f"unsupported SQL dialect {dialect!r}")
    if limit is not None and limit < 0:
        raise QueryError("the limit must not be negative")
    comp = _Compiler(query, target, dialect)
    node = parse(query)
    where = [comp.compile(node)] if node is not None else []
    selected: list[ColumnElement[Any]] = []
    names = list(columns) if columns is not None else dataview.DEFAULT_COLUMNS[target]
    for name in dict.fromkeys(names):
        selected.extend(comp.output(name))
    base = comp.base
    if target == FILE:
        where.append(base.c.current)
    else:
        where.append(base.c.level == sql_literal(target))
    if readable is not None:
        scope = [base.c.group_id.in_(readable), base.c.project_id.in_(readable)]
        if target != FILE:
            scope.append(base.c.id.in_(readable))
        where.append(or_(*scope))
    stmt = select(*selected).select_from(comp.from_clause(node)).where(*where).order_by(base.c.id)
    return stmt if limit is None else stmt.limit(limit)
