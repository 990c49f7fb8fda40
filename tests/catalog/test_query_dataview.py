"""Data View output: table, jsonl and csv writers."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from catalog.dataview import DEFAULT_COLUMNS, write_rows
from catalog.errors import InvalidInputError
from catalog.query import columns_for

ROWS = [
    {
        "file.name": "a.dcm",
        "file.size": 10,
        "file.info.x": {"k": [1, 2]},
        "file.created": datetime(2024, 5, 1, 12, tzinfo=UTC),
        "session.label": None,
    },
    {
        "file.name": 'b "quoted", é',
        "file.size": 2048,
        "file.info.x": True,
        "file.created": None,
        "session.label": "ses1",
    },
]
COLUMNS = ["file.name", "file.size", "file.info.x", "file.created", "session.label"]


def test_jsonl() -> None:
    out = io.StringIO()
    assert write_rows(iter(ROWS), COLUMNS, "jsonl", out) == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {
        "file.name": "a.dcm",
        "file.size": 10,
        "file.info.x": {"k": [1, 2]},
        "file.created": "2024-05-01T12:00:00+00:00",
        "session.label": None,
    }
    assert lines[1]["file.name"] == 'b "quoted", é'
    assert lines[1]["file.info.x"] is True


def test_csv() -> None:
    out = io.StringIO()
    assert write_rows(ROWS, COLUMNS, "csv", out) == 2
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == COLUMNS
    assert rows[1] == ["a.dcm", "10", '{"k": [1, 2]}', "2024-05-01T12:00:00+00:00", ""]
    assert rows[2] == ['b "quoted", é', "2048", "true", "", "ses1"]


def test_table() -> None:
    out = io.StringIO()
    long = {"file.name": "x" * 100, "file.size": 1}
    assert write_rows([*ROWS, long], COLUMNS, "table", out) == 3
    lines = out.getvalue().splitlines()
    assert lines[0].split() == COLUMNS
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].startswith("a.dcm ")
    assert "2024-05-01T12:00:00+00:00" in lines[2]
    assert lines[4].startswith("x" * 59 + "…")
    assert write_rows([], ["file.name"], "table", io.StringIO()) == 0


def test_unknown_format() -> None:
    with pytest.raises(InvalidInputError, match="unknown output format"):
        write_rows(ROWS, COLUMNS, "xml", io.StringIO())


def test_columns_for() -> None:
    assert columns_for("file") == DEFAULT_COLUMNS["file"]
    assert columns_for("session") == [
        "group.label",
        "project.label",
        "subject.label",
        "session.label",
        "session.id",
    ]
    assert columns_for("file", [" path", "file.name", "path"]) == ["path", "file.name"]
