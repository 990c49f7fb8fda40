"""Path grammar and label escaping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog.errors import InvalidInputError, PathError
from catalog.paths import (
    escape_label,
    format_path,
    parse_path,
    unescape_label,
    validate_file_name,
    validate_label,
)

labels = st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s)


@given(labels)
def test_escape_round_trips(label: str) -> None:
    assert unescape_label(escape_label(label)) == label
    assert "/" not in escape_label(label)


@given(st.lists(labels, min_size=1, max_size=5), st.one_of(st.none(), labels))
def test_format_then_parse_round_trips(parts: list[str], file_name: str | None) -> None:
    if file_name is not None and len(parts) < 2:
        parts = [*parts, "p"]
    parsed = parse_path(format_path(parts, file_name=file_name))
    assert parsed.labels == tuple(parts)
    assert parsed.file_name == file_name


def test_keywords_and_slashes_are_addressable() -> None:
    path = format_path(["g", "a/b", "files", "<id:3>"], analysis="x/y", file_name="files")
    parsed = parse_path(path)
    assert parsed.labels == ("g", "a/b", "files", "<id:3>")
    assert parsed.analysis == "x/y"
    assert parsed.file_name == "files"


def test_id_syntax() -> None:
    assert parse_path("<id:42>").anchor_id == 42
    assert parse_path("<id:42>/files/a.nii").file_name == "a.nii"
    assert parse_path("fw://g/p/<id:1>".replace("/<id:1>", "")).labels == ("g", "p")
    with pytest.raises(PathError):
        parse_path("g/<id:4>")
    with pytest.raises(PathError):
        parse_path("<id:4>/sub")


@pytest.mark.parametrize(
    "bad",
    [
        "g/p/s/ses/acq/extra",
        "g/files/x",
        "g/p/files",
        "g/p/files/a/b",
        "g//p",
        "g/p%zz",
        "g/p/analyses",
        "g/p\x00",
    ],
)
def test_malformed_paths(bad: str) -> None:
    with pytest.raises(PathError):
        parse_path(bad)


@pytest.mark.parametrize("bad", ["", " x", "x ", ".", "..", "a\nb", "a" * 256])
def test_invalid_labels(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_label(bad, "subject")


@pytest.mark.parametrize("bad", ["Upper", "has space", "-lead", "a/b"])
def test_invalid_group_ids(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_label(bad, "group")


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".", "/abs", "nul\x00", "", "back\\slash"])
def test_invalid_file_names(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_file_name(bad)
