"""Decoding of search result chunks (catalog.query.rows), without a database."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog.dataview import decode_json
from catalog.query.rows import _dict_builder, json_column

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(st.lists(st.one_of(st.none(), JSON_VALUES.map(json.dumps)), max_size=20))
def test_json_column_matches_decoding_each_value(values: list[str | None]) -> None:
    assert json_column(tuple(values)) == [decode_json(v) for v in values]


def test_json_column_sql_null_and_json_null() -> None:
    assert json_column((None, "null", '"x"', "[1, 2]", '{"a": {"b": 1.5}}')) == [
        None,
        None,
        "x",
        [1, 2],
        {"a": {"b": 1.5}},
    ]


def test_json_column_never_shifts_values() -> None:
    """Text that is not one JSON value must not merge into or split from its neighbours."""
    with pytest.raises(ValueError):
        json_column(("1, 2", "3"))
    with pytest.raises(ValueError):
        json_column(("[1", "2]"))


@pytest.mark.parametrize(
    "text", ["0", "-12", "0.003", "1e5", "-2.5E-3", "1E400", '"a\\"b"', '"plain"', "true", "[]"]
)
def test_decode_json_fast_paths_agree_with_json(text: str) -> None:
    assert decode_json(text) == json.loads(text)


@given(st.lists(st.text(), min_size=1, max_size=12, unique=True), st.integers(0, 5))
def test_row_dicts_are_keyed_by_any_labels(labels: list[str], count: int) -> None:
    """Labels are data, never code: quotes, braces and code-like text come out as keys."""
    rows = [tuple(f"{n}:{label}" for label in labels) for n in range(count)]
    assert _dict_builder(labels)(rows) == [dict(zip(labels, row, strict=True)) for row in rows]


def test_row_dicts_for_hostile_and_wide_labels() -> None:
    hostile = ["a'}, __import__('os').system('false'), {'", '"', "k0", "v1", "}]"]
    assert _dict_builder(hostile)([(1, 2, 3, 4, 5)]) == [
        dict(zip(hostile, (1, 2, 3, 4, 5), strict=True))
    ]
    wide = [f"file.info.c{i}" for i in range(300)]
    assert _dict_builder(wide)([tuple(range(300))]) == [dict(zip(wide, range(300), strict=True))]
