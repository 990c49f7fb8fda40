"""DICOM headers: read them cheaply, check a file is whole, map it onto the hierarchy.

Mapping (Flywheel's convention): PatientID -> subject, StudyInstanceUID -> session (labelled
``<StudyDate> <StudyDescription>``), SeriesInstanceUID -> acquisition (labelled
``<SeriesNumber> - <SeriesDescription>``).  Files of one acquisition share a ``group_key``
(study and series UID).  Hazards are reported, never silently merged: a missing UID gives a
synthetic group key derived from the other header fields (an error under ``strict_uid``).
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from catalog.errors import GearbrokerError
from ingest import dicomscan

#: Header fields kept in ``info.header.dicom`` (and used for mapping and classification).
HEADER_FIELDS: tuple[str, ...] = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientWeight", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription",
    "StudyID", "AccessionNumber", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
    "SeriesDate", "SeriesTime", "ProtocolName", "Modality", "SOPClassUID", "SOPInstanceUID",
    "InstanceNumber", "AcquisitionNumber", "AcquisitionTime", "ImageType", "Manufacturer",
    "ManufacturerModelName", "MagneticFieldStrength", "InstitutionName", "BodyPartExamined",
    "RepetitionTime", "EchoTime", "FlipAngle", "SliceThickness", "PixelSpacing", "Rows",
    "Columns", "ScanningSequence", "SequenceVariant",
)  # fmt: skip
# Plain ints, not pydicom's Tag: a Tag key compares through a Python ``__eq__``.
_TAGS: tuple[tuple[str, int, str], ...] = tuple(
    (kw, int(Tag(kw)), dictionary_VR(Tag(kw))) for kw in HEADER_FIELDS
)
_CHARSET = 0x00080005
_WANTED = frozenset(tag for _kw, tag, _vr in _TAGS) | {_CHARSET}
#: The fields :func:`map_header` and :func:`classify` read: enough to place a file.
MAPPING_FIELDS = frozenset({
    "PatientID", "StudyInstanceUID", "StudyDate", "StudyID", "StudyDescription",
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "ProtocolName",
    "SOPInstanceUID", "Modality", "InstanceNumber",
})  # fmt: skip
_MAPPING_TAGS = tuple(t for t in _TAGS if t[0] in MAPPING_FIELDS)
_MAPPING_WANTED = frozenset(tag for _kw, tag, _vr in _MAPPING_TAGS) | {_CHARSET}
_INTEGERS = frozenset({"SeriesNumber", "InstanceNumber", "AcquisitionNumber"})
_BINARY = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}
PIXEL_TAG = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF
_CONTROL = re.compile("[\x00-\x1f\x7f]")
#: Bytes fetched first from a remote object; most headers end well before this.
HEAD_BYTES = 64 * 1024

#: (words in a series description, classification); first match wins.
_CLASSES: tuple[tuple[tuple[str, ...], dict[str, list[str]]], ...] = (
    (("localizer", "scout", "survey", "loc"), {"Intent": ["Localizer"]}),
    (("bold", "fmri", "rest", "task"), {"Intent": ["Functional"], "Measurement": ["T2*"]}),
    (("dwi", "dti", "diff"), {"Intent": ["Structural"], "Measurement": ["Diffusion"]}),
    (("flair",), {"Intent": ["Structural"], "Measurement": ["T2"], "Features": ["FLAIR"]}),
    (("t1", "mprage", "spgr"), {"Intent": ["Structural"], "Measurement": ["T1"]}),
    (("t2",), {"Intent": ["Structural"], "Measurement": ["T2"]}),
    (("fieldmap", "field_map", "b0"), {"Intent": ["Fieldmap"], "Measurement": ["B0"]}),
)


class DicomFileError(GearbrokerError):
    """A file is not DICOM, is truncated, or lacks what the mapping requires."""


@dataclass(frozen=True)
class MappingOptions:
    """How headers map onto subject/session/acquisition labels."""

    subject: str | None = None
    session: str | None = None
    subject_map: Mapping[str, str] = field(default_factory=dict)
    strict_uid: bool = False


@dataclass(frozen=True)
class Target:
    """Where one DICOM file goes, and what is recorded about it."""

    group_key: str
    position: int | None
    subject: str
    session: str
    acquisition: str
    name: str
    detail: dict[str, Any]


def read_header(data: bytes, size: int | None = None) -> tuple[Dataset, int | None]:
    """Parse the header of ``data`` (the whole file or its first bytes; ``size`` is the
    whole file's size).  Returns the dataset and the offset of the pixel data element, or
    None when the data ended first.  Raises DicomFileError for non-DICOM or truncated data.
    """
    stream = io.BytesIO(data)
    try:
        ds = dcmread(stream, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise DicomFileError(f"not a DICOM file: {exc}") from exc
    except Exception as exc:  # any parser failure on untrusted bytes: this file is unreadable
        raise DicomFileError(f"not a DICOM file: {type(exc).__name__}: {exc}") from exc
    offset = stream.tell()
    if offset >= len(data) - 8:
        if size is not None and len(data) < size:
            return ds, None  # a head that ended inside the header: the caller reads more
        sop_class = ds.get("SOPClassUID")
        if "Rows" in ds or (sop_class is not None and "Image Storage" in sop_class.name):
            raise DicomFileError("truncated: the file ends before its pixel data")
        return ds, None
    implicit, little = ds.original_encoding
    _check_pixels(
        bool(implicit), little is not False, data, offset, size if size is not None else len(data)
    )
    return ds, offset


def read_fields(
    data: bytes, size: int | None = None, mapping_only: bool = False
) -> tuple[dict[str, Any], int | None]:
    """:func:`header_fields` of :func:`read_header`, with the same offset and errors, but
    through :func:`ingest.dicomscan.scan` when it can read the file (52 instead of 233 us
    on our MR slices) and pydicom otherwise.  ``mapping_only``: the walk converts only the
    :data:`MAPPING_FIELDS` (pydicom's path still gives them all)."""
    tags, wanted = (_MAPPING_TAGS, _MAPPING_WANTED) if mapping_only else (_TAGS, _WANTED)
    found = dicomscan.scan(data, wanted)
    if found is None:
        ds, offset = read_header(data, size)
        return header_fields(ds), offset
    size = size if size is not None else len(data)
    _check_pixels(found.implicit, True, data, found.pixel_offset, size)
    elements = found.elements
    charset = elements.get(_CHARSET)
    utf8 = charset is not None and b"192" in charset[1]
    out: dict[str, Any] = {}
    for keyword, tag, vr in tags:
        raw = elements.get(tag)
        if raw is not None:
            _put(out, keyword, _decode(raw[1], raw[0] or vr, True, utf8))
    return out, found.pixel_offset


def _check_pixels(implicit: bool, little: bool, data: bytes, offset: int, size: int) -> None:
    """Raise DicomFileError unless the pixel data element fits in ``size`` bytes."""
    order = "<" if little else ">"
    head = data[offset : offset + 12]
    if len(head) < 8:
        raise DicomFileError("truncated inside the pixel data element header")
    group, elem = struct.unpack(order + "HH", head[:4])
    if (group << 16) | elem != PIXEL_TAG:
        return  # trailing elements other than pixel data: nothing to check
    if implicit:
        (length,) = struct.unpack(order + "I", head[4:8])
        start = offset + 8
    elif head[4:6] in dicomscan.LONG_VRS:
        if len(head) < 12:
            raise DicomFileError("truncated inside the pixel data element header")
        (length,) = struct.unpack(order + "I", head[8:12])
        start = offset + 12
    else:
        (length,) = struct.unpack(order + "H", head[6:8])
        start = offset + 8
    if length != _UNDEFINED and start + length > size:
        raise DicomFileError(
            f"truncated: pixel data needs {start + length} bytes, the file has {size}"
        )


def header_fields(ds: Dataset) -> dict[str, Any]:
    """The :data:`HEADER_FIELDS` present in ``ds`` as JSON values (strings, numbers, lists)."""
    charset = ds.get_item(0x00080005)
    utf8 = charset is not None and b"192" in _raw_bytes(charset)
    out: dict[str, Any] = {}
    for keyword, tag, vr in _TAGS:
        elem = ds.get_item(tag)
        if elem is None:
            continue
        if isinstance(elem, RawDataElement):
            value = _decode(elem.value, elem.VR or vr, elem.is_little_endian, utf8)
        else:
            value = _plain(elem.value)
        _put(out, keyword, value)
    return out


def _put(out: dict[str, Any], keyword: str, value: Any) -> None:
    if value in ("", None, []):
        return
    out[keyword] = _as_int(value) if keyword in _INTEGERS else value


def _raw_bytes(elem: Any) -> bytes:
    value = elem.value
    return value if isinstance(value, bytes) else str(value).encode()


def _decode(raw: bytes | None, vr: str, little: bool, utf8: bool) -> Any:
    """A raw value as JSON: numbers for binary integer VRs, else text (a list if multi)."""
    if raw is None:
        return None
    if vr in _BINARY:
        order = "<" if little else ">"
        width = struct.calcsize(_BINARY[vr])
        count = len(raw) // width
        numbers = list(struct.unpack(f"{order}{count}{_BINARY[vr]}", raw[: count * width]))
        return numbers[0] if len(numbers) == 1 else numbers
    text = raw.decode("utf-8" if utf8 else "latin-1", "replace").strip(" \x00")
    if "\\" in text:
        return [part.strip() for part in text.split("\\")]
    return text


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, int | float):
        return value
    return str(value).strip()


def _as_int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def map_header(fields: Mapping[str, Any], options: MappingOptions, key: str) -> Target:
    """Map one file's header fields onto its target; raises DicomFileError under strict_uid."""
    hazards: list[str] = []
    patient = _text(fields.get("PatientID"))
    study = _text(fields.get("StudyInstanceUID"))
    series = _text(fields.get("SeriesInstanceUID"))
    if not patient:
        hazards.append("missing PatientID")
    for name, uid in (("StudyInstanceUID", study), ("SeriesInstanceUID", series)):
        if not uid:
            if options.strict_uid:
                raise DicomFileError(f"missing {name} (--strict-uid)")
            hazards.append(f"missing {name}")
    study_id = study or _synthetic("study", patient, fields.get("StudyDate"), fields.get("StudyID"))
    series_id = series or _synthetic(
        "series", study_id, fields.get("SeriesNumber"), fields.get("SeriesDescription")
    )
    subject = options.subject or options.subject_map.get(patient) or _label(patient) or "unknown"
    session = options.session or _session_label(fields) or _label(study_id)
    acquisition = _acquisition_label(fields) or _label(series_id)
    sop = _text(fields.get("SOPInstanceUID"))
    if not sop:
        hazards.append("missing SOPInstanceUID")
    name = f"{sop}.dcm" if sop else key.rsplit("/", 1)[-1]
    modality = _text(fields.get("Modality")) or None
    detail: dict[str, Any] = {
        "uids": {
            "session": None if options.session else study_id,
            "acquisition": series_id,
        },
        "header": dict(fields),
        "modality": modality,
        "classification": classify(fields),
    }
    if hazards:
        detail["hazards"] = hazards
    position = fields.get("InstanceNumber")
    return Target(
        f"{series_id}|{study_id}",
        position if isinstance(position, int) else None,
        subject,
        session,
        acquisition,
        name,
        detail,
    )


def classify(fields: Mapping[str, Any]) -> dict[str, list[str]]:
    """A basic Flywheel-style classification from the series description and protocol."""
    classes = _classes(_text(fields.get("SeriesDescription")), _text(fields.get("ProtocolName")))
    return {name: list(values) for name, values in classes.items()}


@lru_cache(maxsize=1024)
def _classes(description: str, protocol: str) -> dict[str, list[str]]:
    """The :data:`_CLASSES` entry the two texts match (a series' slices share them)."""
    words = f"{description} {protocol}".lower().replace("-", "_")
    tokens = set(words.replace("_", " ").split())
    for keys, classes in _CLASSES:
        if any(k in tokens or (len(k) > 3 and k in words) for k in keys):
            return classes
    return {}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _label(text: str) -> str:
    """A valid container label: control characters dropped, trimmed, at most 255 chars."""
    clean = _CONTROL.sub("", text).strip()
    return clean[:255].strip() if clean not in (".", "..") else f"_{clean}"


def _session_label(fields: Mapping[str, Any]) -> str:
    date = _text(fields.get("StudyDate"))
    if len(date) == 8 and date.isdigit():
        date = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    return _label(" ".join(p for p in (date, _text(fields.get("StudyDescription"))) if p))


def _acquisition_label(fields: Mapping[str, Any]) -> str:
    number = fields.get("SeriesNumber")
    desc = _text(fields.get("SeriesDescription"))
    parts = [str(number)] if number is not None else []
    return _label(" - ".join([*parts, desc] if desc else parts))


def _synthetic(kind: str, *parts: Any) -> str:
    digest = hashlib.sha256(repr(parts).encode()).hexdigest()[:20]
    return f"no-{kind}-uid-{digest}"


def zip_name(acquisition: str) -> str:
    """The name of an acquisition's packed series (Flywheel's ``.dicom.zip`` convention)."""
    return acquisition.replace("/", "_").replace("\\", "_") + ".dicom.zip"
