"""Parsing and compiling without a database: syntax errors, fields, bound parameters."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from catalog.errors import QueryError
from catalog.query import QuerySyntaxError, compile_search, parse
from catalog.query.parser import And, Condition, Not, Or

DIALECTS: dict[str, Dialect] = {
    "sqlite": sqlite.dialect(),
    "postgresql": postgresql.psycopg.dialect(),  # type: ignore[no-untyped-call]
}


def quote(text: str) -> str:
    """A double-quoted query string literal for ``text``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_parse_shapes() -> None:
    node = parse("group.label = 1 OR not project.label = 2 And file.size > 3")
    assert isinstance(node, Or)
    left, right = node.items
    assert isinstance(left, Condition) and left.field.level == "group"
    assert isinstance(right, And)
    assert isinstance(right.items[0], Not)
    cond = parse("Session.INFO.subject_raw.Age-y not exists")
    assert isinstance(cond, Condition)
    assert (cond.field.level, cond.field.attr, cond.field.keys) == (
        "session",
        "info",
        ("subject_raw", "Age-y"),
    )
    assert cond.op == "exists" and cond.negated
    cond = parse("file.name != 'a\\'b\\u00e9\\d'")
    assert isinstance(cond, Condition) and cond.negated and cond.op == "="
    assert cond.values[0].raw == "a'bé\\d"
    cond = parse("file.type not in [dicom, 'nifti', 3]")
    assert isinstance(cond, Condition) and cond.negated
    assert [v.raw for v in cond.values] == ["dicom", "nifti", "3"]
    assert parse("   ") is None


@pytest.mark.parametrize(
    ("query", "position", "message"),
    [
        ("file.type = ", 12, "expected a value"),
        ("file.type = and", 12, "expected a value"),
        ("file.type dicom", 10, "expected an operator"),
        ("file.type = dicom and", 21, "expected a field"),
        ("file.type = dicom)", 17, "expected 'and', 'or'"),
        ("(file.type = dicom", 18, "expected ')'"),
        ("file.type = 'dicom", 12, "unterminated string"),
        ("file.type = dicom & x", 18, "unexpected character '&'"),
        ("files.type = dicom", 0, "unknown level 'files'"),
        ("session.colour = red", 0, "unknown field 'session.colour'"),
        ("file.type = x and session.info = 3", 18, "name a key"),
        ("file.classification = T1", 0, "classification key"),
        ("file.name.x = 1", 0, "has no sub-keys"),
        ("file.info.-x = 1", 0, "invalid key '-x'"),
        ("file.info.a:b = 1", 0, "invalid key 'a:b'"),
        ("file.type in dicom", 13, "expected '['"),
        ("file.type in [dicom", 19, "expected ',' or ']'"),
        ("file.size > big", 12, "needs a number"),
        ("file.created > yesterday", 15, "ISO date"),
        ("file.name =~ '('", 13, "invalid regular expression"),
        ("file.size =~ 3", 10, "does not apply"),
        ("file.tags < a", 10, "does not apply to the list"),
        ("file.info.x > true", 14, "does not apply to true/false"),
        ("file.info.x < null", 14, "null only works"),
        ("file.name not = x", 14, "'contains', 'in' or 'exists'"),
        ("file.name = '\\u0000'", 13, "not a valid character"),
        ("not " * 70 + "file.size = 1", 256, "nested deeper"),
    ],
)
def test_errors_point_at_the_problem(query: str, position: int, message: str) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        compile_search(query)
    err = info.value
    assert isinstance(err, QueryError)
    assert message in err.reason
    assert err.position == position
    lines = str(err).splitlines()
    assert lines[-1].index("^") - 2 == position
    assert f"(at position {position + 1})" in lines[0]


def test_other_errors() -> None:
    with pytest.raises(QueryError, match="unknown result level"):
        compile_search("", target="dataset")
    with pytest.raises(QueryError, match="negative"):
        compile_search("", limit=-1)
    with pytest.raises(QueryError, match="unknown field"):
        compile_search("", columns=["file.nope"])


@pytest.mark.parametrize("dialect", DIALECTS)
def test_json_keys_are_literals_values_are_bound(dialect: str) -> None:
    stmt = compile_search("file.info.PatientID = P001 and session.info.a.b-c > 3", dialect=dialect)
    compiled = stmt.compile(dialect=DIALECTS[dialect])
    sql = str(compiled)
    if dialect == "sqlite":
        assert "json_extract(file.info, '$.PatientID')" in sql
        assert "json_extract(session.info, '$.a.\"b-c\"')" in sql
    else:
        assert "(file.info ->> 'PatientID')" in sql
        assert "(session.info -> 'a') ->> 'b-c'" in sql
    assert "P001" not in sql
    assert "P001" in compiled.params.values()
    assert 3 in compiled.params.values()


HOSTILE = st.one_of(
    st.sampled_from(
        [
            "' OR 1=1 --",
            "'; DROP TABLE files; --",
            '" OR ""="',
            "\\'",
            "%s",
            "?",
            ":param_1",
            "$1",
            "é中文🙂",
            "\n\t",
            "--",
            ";",
        ]
    ),
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
        max_size=30,
    ),
)
MARK = "QzQ"  # brackets each value so it cannot occur in the SQL by accident
FIELDS = [
    "file.name",
    "file.info.PatientID",
    "session.label",
    "acquisition.info.a.b",
    "file.tags",
    "file.classification.Intent",
    "subject.info.x",
]
OPS = ["=", "!=", "=~", "!~", "contains", "<", ">=", "in"]


@settings(max_examples=150, deadline=None)
@given(
    value=HOSTILE,
    field=st.sampled_from(FIELDS),
    op=st.sampled_from(OPS),
    dialect=st.sampled_from(sorted(DIALECTS)),
    target=st.sampled_from(["file", "session", "project"]),
)
def test_literals_only_travel_as_parameters(
    value: str, field: str, op: str, dialect: str, target: str
) -> None:
    text = MARK + value + MARK
    if op in ("=~", "!~"):
        text = MARK + re.escape(value) + MARK
    if op in ("<", ">=") and field in ("file.tags", "file.classification.Intent"):
        op = "="
    literal = f"[{quote(text)}, 'other']" if op == "in" else quote(text)
    query = f"{field} {op} {literal} or file.name = {quote(text)}"
    stmt = compile_search(query, target=target, dialect=dialect, readable=[1, 2])
    compiled = stmt.compile(dialect=DIALECTS[dialect])
    sql = str(compiled)
    assert MARK not in sql
    flat = repr(list(compiled.params.values()))
    assert repr(text)[1:-1] in flat or text in flat
