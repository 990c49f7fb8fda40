"""The fast header walk (:mod:`ingest.dicomscan`) against pydicom: :func:`read_fields` must
give exactly what ``header_fields(read_header(...))`` gives (fields, pixel offset, or a
DicomFileError) on pydicom's own test files, on our synthetic slices in several encodings,
and on truncations of all of them."""

from __future__ import annotations

import io
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ingest import dicomscan
from ingest.dicom import (
    _WANTED,
    MAPPING_FIELDS,
    DicomFileError,
    header_fields,
    read_fields,
    read_header,
)
from ingest.synthetic import SeriesSpec, make_slice, uid_for

PYDICOM_FILES = sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))


def _slow(data: bytes, size: int | None = None) -> tuple[Any, ...]:
    try:
        ds, offset = read_header(data, size)
    except DicomFileError:
        return ("error",)
    return header_fields(ds), offset


def _fast(data: bytes, size: int | None = None) -> tuple[Any, ...]:
    try:
        return read_fields(data, size)
    except DicomFileError:
        return ("error",)


def _slice(syntax: str = ExplicitVRLittleEndian, **changes: Any) -> bytes:
    spec = SeriesSpec("P1", "Doe^John", uid_for("st"), uid_for("se"), 7, "T1w_MPRAGE", slices=2)
    ds = make_slice(spec, 0)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _with_sequences(syntax: str) -> bytes:
    """A slice whose header holds undefined-length sequences, nested, with undefined- and
    defined-length items, and a private sequence, before and after the wanted tags."""
    inner = Dataset()
    inner.CodeValue = "113691"
    inner.CodingSchemeDesignator = "DCM"
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    item.ReferencedSOPInstanceUID = uid_for("ref")
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    item.PurposeOfReferenceCodeSequence.is_undefined_length = True
    ds = pydicom.dcmread(io.BytesIO(_slice(syntax)))
    ds.ReferencedImageSequence = Sequence([item, item])
    ds.ReferencedImageSequence.is_undefined_length = True
    for each in ds.ReferencedImageSequence:
        each.is_undefined_length_sequence_item = True
    ds.add_new(0x00291010, "SQ", Sequence([inner]))  # private, defined length
    ds.AnatomicRegionSequence = Sequence([inner])
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _cases() -> Iterator[tuple[str, bytes]]:
    for path in PYDICOM_FILES:
        yield path.name, path.read_bytes()
    yield "explicit", _slice()
    yield "implicit", _slice(ImplicitVRLittleEndian)
    yield "utf8", _slice(SpecificCharacterSet="ISO_IR 192", PatientName="Müller^Jürgen")
    yield "latin1", _slice(SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Jürgen")
    yield "empty-values", _slice(SeriesNumber=None, SeriesDescription="", PatientWeight=None)
    yield "multi-valued", _slice(ImageType=["ORIGINAL", "PRIMARY", "M", "ND"])
    yield "sequences-explicit", _with_sequences(ExplicitVRLittleEndian)
    yield "sequences-implicit", _with_sequences(ImplicitVRLittleEndian)


CASES = list(_cases())


@pytest.fixture(autouse=True)
def _quiet_pydicom() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize(("name", "data"), CASES, ids=[name for name, _data in CASES])
def test_fast_fields_equal_pydicom_fields(name: str, data: bytes) -> None:
    assert _fast(data) == _slow(data)
    assert _fast(data, len(data) + 1000) == _slow(data, len(data) + 1000)
    slow = _slow(data)
    try:
        mapping, offset = read_fields(data, mapping_only=True)
    except DicomFileError:
        assert slow == ("error",)
        return
    assert offset == slow[1]
    if dicomscan.scan(data, _WANTED) is not None:  # the walk converts only what maps
        assert mapping == {k: v for k, v in slow[0].items() if k in MAPPING_FIELDS}
    else:  # pydicom's path converts everything
        assert mapping == slow[0]


def test_the_fast_walk_reads_our_slices_and_most_of_pydicoms_files() -> None:
    """Not a fallback in disguise: the walk itself handles the common encodings."""
    ours = [name for name, data in CASES[len(PYDICOM_FILES) :]]
    for name, data in CASES[len(PYDICOM_FILES) :]:
        assert dicomscan.scan(data, _WANTED) is not None, name
    theirs = sum(dicomscan.scan(p.read_bytes(), _WANTED) is not None for p in PYDICOM_FILES)
    assert len(ours) == 8 and theirs >= len(PYDICOM_FILES) // 2


def test_files_pydicom_must_parse_fall_back() -> None:
    big_endian = next(p for p in PYDICOM_FILES if p.name == "MR_small_bigendian.dcm")
    no_meta = next(p for p in PYDICOM_FILES if p.name == "no_meta.dcm")
    deflated = next(p for p in PYDICOM_FILES if p.name == "image_dfl.dcm")
    for path in (big_endian, no_meta, deflated):
        assert dicomscan.scan(path.read_bytes(), _WANTED) is None, path.name
    for name in ("JPEG-lossy.dcm", "JPEG2000.dcm", "JPEGLSNearLossless_16.dcm"):
        jpeg = next(p for p in PYDICOM_FILES if p.name == name)  # encapsulated: explicit VR LE
        assert dicomscan.scan(jpeg.read_bytes(), _WANTED) is not None, name


def test_truncations_agree_with_pydicom() -> None:
    """Every cut in the header region of each case (and random cuts in the rest), as a whole
    file and as the head of a longer one: same fields and offset, or both a DicomFileError
    (pydicom's own exceptions on cut files, OSError and BytesLengthException among them,
    used to escape read_header and fail the whole shard's task)."""
    rng = random.Random(8)
    checked = 0
    for name, data in CASES:
        cuts = set(range(0, min(len(data), 1600), 5)) | {rng.randrange(len(data)) for _ in range(8)}
        for cut in sorted(cuts):
            for size in (None, len(data)):
                assert _fast(data[:cut], size) == _slow(data[:cut], size), (name, cut, size)
                checked += 1
    assert checked > 20_000


def test_empty_elements_are_left_out_not_recorded_as_none() -> None:
    data = next(p for p in PYDICOM_FILES if p.name == "rtdose.dcm").read_bytes()
    fields, _offset = read_fields(data)
    assert "None" not in fields.values() and None not in fields.values()
    ds, _offset = read_header(data)
    assert header_fields(ds) == fields
