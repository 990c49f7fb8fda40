"""The catalog's JSON codec (catalog.jsoncodec), alone and through both databases."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from catalog import jsoncodec
from catalog.catalog import Catalog
from catalog.infokeys import parse_value

TRICKY: dict[str, Any] = {
    "PatientName": "Müller^Zoë \"q\" 'single' back\\slash\ttab\nnewline",
    "emoji": "🧠 日本語",
    "nested": {"list": [1, 2.5, None, True, False, "x\\y"], "empty": {}, "blank": []},
    "EchoTime": 0.00298,
    "negative": -1e-300,
    "int64": 2**63 - 1,
}


def test_round_trip_matches_the_standard_library() -> None:
    text = jsoncodec.dumps(TRICKY)
    assert json.loads(text) == TRICKY
    assert jsoncodec.loads(text) == TRICKY
    assert jsoncodec.loads(json.dumps(TRICKY)) == TRICKY
    assert "Müller" in text  # UTF-8 kept, not \\u-escaped


def test_values_orjson_refuses_are_written_by_the_standard_library() -> None:
    big = {"uid": 2**70, "negative": -(2**80)}
    assert jsoncodec.loads(jsoncodec.dumps(big)) == big
    assert jsoncodec.loads(jsoncodec.dumps({1: "one", None: "none"})) == {
        "1": "one",
        "null": "none",
    }


def test_non_finite_floats_become_null() -> None:
    out = jsoncodec.loads(jsoncodec.dumps({"a": math.nan, "b": [math.inf, -math.inf, 1.5]}))
    assert out == {"a": None, "b": [None, None, 1.5]}


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("a\x00b", "a\ufffdb"),
        ("\\u0000 is text", "\\u0000 is text"),  # a backslash, then "u0000": kept
        ("\\\x00", "\\\ufffd"),  # a backslash, then NUL
        ("\\\\u0000\x00", "\\\\u0000\ufffd"),
    ],
)
def test_nul_becomes_the_replacement_character(value: str, stored: str) -> None:
    doc = {value: [value, 2**70]}  # both encoders
    assert jsoncodec.loads(jsoncodec.dumps(doc)) == {stored: [stored, 2**70]}
    assert jsoncodec.loads(jsoncodec.dumps(value)) == stored


@dataclass
class _Point:
    x: int


@pytest.mark.parametrize(
    "value", [{"when": datetime.now(UTC)}, {"p": _Point(1)}, {"s": {1, 2}}, {"b": b"raw"}]
)
def test_what_the_standard_library_refuses_still_raises_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        jsoncodec.dumps(value)


def test_loads_reads_text_an_earlier_version_stored() -> None:
    assert math.isnan(jsoncodec.loads('{"a": NaN}')["a"])
    assert jsoncodec.loads(b'{"a": [1]}') == {"a": [1]}
    assert jsoncodec.loads(memoryview(b'{"a": Infinity}')) == {"a": math.inf}
    with pytest.raises(ValueError):
        jsoncodec.loads("{not json")


def test_info_values_that_json_cannot_hold_stay_strings() -> None:
    assert parse_value("NaN") == "NaN"
    assert parse_value("-Infinity") == "-Infinity"
    assert parse_value("42") == 42
    assert parse_value('{"a": [1, "b"]}') == {"a": [1, "b"]}
    assert parse_value("not json") == "not json"


def test_catalog_stores_and_searches_unusual_values(catalog: Catalog) -> None:
    """NaN (which the standard library stored as invalid JSON), NUL (which PostgreSQL
    refused), 70-bit integers and non-ASCII text are stored, read back and searched on both
    databases."""
    catalog.create_group("lab")
    catalog.create_project("lab", "study")
    for label, score in (("sub-01", math.nan), ("sub-02", 7)):
        with catalog.db.session() as session:
            catalog.ensure_path(session, ("lab", "study", label))
        catalog.info_set(
            f"lab/study/{label}",
            {"score": score, "uid": 2**70, "site": "Hôpital 🧠", "nul": "a\x00b", **TRICKY},
        )
    info = catalog.info_get("lab/study/sub-01")
    assert info["score"] is None
    assert info["uid"] == 2**70
    assert info["site"] == "Hôpital 🧠"
    assert info["nul"] == "a\ufffdb"
    assert {k: info[k] for k in TRICKY} == TRICKY
    hits = list(catalog.search('subject.info.site = "Hôpital 🧠"', "subject"))
    assert sorted(h["subject.label"] for h in hits) == ["sub-01", "sub-02"]
    hits = list(catalog.search("subject.info.score > 1", "subject"))
    assert [h["subject.label"] for h in hits] == ["sub-02"]
