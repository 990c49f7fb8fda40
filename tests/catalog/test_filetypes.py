"""File type detection and the bulk loader's name check: fast paths agree with the rules."""

from __future__ import annotations

import mimetypes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog import filetypes
from catalog.bulk import _check_name
from catalog.errors import InvalidInputError
from catalog.paths import validate_file_name

SUFFIXES = [suffix for suffix, _type, _mime in filetypes._SUFFIXES]


def _longest_suffix_first(name: str) -> tuple[str | None, str]:
    """The rule detect() implements: the longest known suffix wins, case-insensitively."""
    lower = name.lower()
    for suffix, ftype, mime in sorted(filetypes._SUFFIXES, key=lambda s: -len(s[0])):
        if lower.endswith(suffix):
            return ftype, mime
    return None, mimetypes.guess_type(name)[0] or "application/octet-stream"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("IM-0001.dcm", ("dicom", "application/dicom")),
        ("series.dicom.zip", ("dicom", "application/zip")),
        ("SERIES.DCM.ZIP", ("dicom", "application/zip")),
        ("bundle.zip", ("archive", "application/zip")),
        ("t1.nii.gz", ("nifti", "application/octet-stream")),
        ("a.b.tar.gz", ("archive", "application/gzip")),
        ("notes.gz", ("archive", "application/gzip")),
        ("nii.gz", ("archive", "application/gzip")),
        ("aseg.stats", (None, "application/octet-stream")),
        ("README", (None, "application/octet-stream")),
        ("photo.gif", (None, "image/gif")),
        (".dcm", ("dicom", "application/dicom")),
    ],
)
def test_detect(name: str, expected: tuple[str | None, str]) -> None:
    assert filetypes.detect(name) == expected


@given(
    st.text(alphabet="aB.-_x0", max_size=8),
    st.sampled_from([*SUFFIXES, "", ".ZIP", ".Nii.Gz", ".gif", ".tar"]),
    st.sampled_from(["", ".", "..", ".x"]),
)
def test_detect_follows_the_longest_suffix_rule(stem: str, suffix: str, tail: str) -> None:
    for name in (stem + suffix, stem + suffix + tail, suffix + stem):
        assert filetypes.detect(name) == _longest_suffix_first(name)


@given(st.text(max_size=40))
def test_bulk_name_check_rejects_exactly_what_validate_file_name_rejects(name: str) -> None:
    try:
        validate_file_name(name)
    except InvalidInputError:
        with pytest.raises(InvalidInputError):
            _check_name(name)
    else:
        _check_name(name)


@pytest.mark.parametrize("name", ["a\x7fb", "nbsp\u00a0name", "zero\u200bwidth", "x" * 1024])
def test_bulk_name_check_edge_cases(name: str) -> None:
    # DEL is refused; names that are merely not printable take the full check and pass.
    if "\x7f" in name:
        with pytest.raises(InvalidInputError):
            _check_name(name)
    else:
        _check_name(name)
