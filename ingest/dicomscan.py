"""A fast walk over a DICOM file's top-level elements, for ingest's common case.

:func:`scan` reads the file meta, then steps over the data set's top-level elements up to
the pixel data, keeping the raw value of the tags asked for and skipping every other value
(sequences included) by its length.  It handles only what it can read without doubt: a
preamble and ``DICM``, and a data set in implicit or explicit VR little endian (native or
encapsulated pixel data).  Anything else (no preamble, big endian, deflate, an unknown VR,
an element that runs past the data, no pixel data) returns None and the caller parses the
file with pydicom, which gives the same answer or the precise error.  The tests hold the
two paths to the same fields and offset on pydicom's own test files and on truncations.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_HEADER = struct.Struct("<HHI")
_SHORT = struct.Struct("<H")
_LONG = struct.Struct("<I")
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_TRANSFER_SYNTAX = 0x00020010
#: Where pydicom's ``stop_before_pixels`` stops: (float, double float) pixel data.
_PIXELS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
#: Explicit VRs with a 2-byte reserved field and a 4-byte length.
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC",
                      b"UN", b"UR", b"UT", b"UV"})  # fmt: skip
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL",
                        b"IS", b"LO", b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM",
                        b"UI", b"UL", b"US"})  # fmt: skip
_VR_NAMES = {code: code.decode() for code in LONG_VRS | _SHORT_VRS}
_EXPLICIT = struct.Struct("<HH2sH")
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
#: JPEG, JPEG-LS, JPEG 2000, MPEG, HEVC, HTJ2K (``.4.``) and RLE (``.5``): explicit VR LE.
_ENCAPSULATED = ("1.2.840.10008.1.2.4.", "1.2.840.10008.1.2.5")
_MAX_DEPTH = 12


@dataclass(frozen=True)
class Scan:
    """What :func:`scan` found: the wanted tags' ``(VR or None if implicit, raw value)``
    and the offset of the pixel data element."""

    elements: dict[int, tuple[str | None, bytes]]
    pixel_offset: int
    implicit: bool


def scan(data: bytes, wanted: frozenset[int]) -> Scan | None:
    """The top-level ``wanted`` elements of ``data`` (a whole file or its head), or None
    when this walk cannot vouch for the file (the caller then asks pydicom)."""
    if len(data) < 144 or data[128:132] != b"DICM":
        return None
    meta = _meta(data)
    if meta is None:
        return None
    syntax, pos = meta
    if syntax == _IMPLICIT_LE:
        implicit = True
    elif syntax == _EXPLICIT_LE or syntax.startswith(_ENCAPSULATED):
        implicit = False
    else:
        return None
    if pos + 8 > len(data) or _looks_explicit(data, pos) != (not implicit):
        return None  # the encoding disagrees with the transfer syntax: pydicom sorts it out
    return _top_level(data, pos, implicit, wanted)


def _meta(data: bytes) -> tuple[str, int] | None:
    """(transfer syntax UID, offset after the group-2 file meta elements)."""
    pos = 132
    syntax = None
    end = len(data)
    while pos + 8 <= end:
        group, element, _length = _HEADER.unpack_from(data, pos)
        if group != 0x0002:
            break
        found = _element(data, pos, False)
        if found is None or found[2] == _UNDEFINED:
            return None
        _vr, start, length = found
        if start + length > end:
            return None
        if (group << 16) | element == _TRANSFER_SYNTAX:
            syntax = data[start : start + length].decode("ascii", "replace").strip(" \x00")
        pos = start + length
    if not syntax:
        return None
    return syntax, pos


def _looks_explicit(data: bytes, pos: int) -> bool:
    return data[pos + 4 : pos + 6] in LONG_VRS or data[pos + 4 : pos + 6] in _SHORT_VRS


def _element(data: bytes, pos: int, implicit: bool) -> tuple[str | None, int, int] | None:
    """(VR or None, value offset, value length) of the element at ``pos``; None for a VR
    this walk does not know or a header that runs past the data."""
    if implicit:
        return None, pos + 8, _LONG.unpack_from(data, pos + 4)[0]
    vr = data[pos + 4 : pos + 6]
    if vr in _SHORT_VRS:
        return vr.decode(), pos + 8, _SHORT.unpack_from(data, pos + 6)[0]
    if vr in LONG_VRS and pos + 12 <= len(data):
        return vr.decode(), pos + 12, _LONG.unpack_from(data, pos + 8)[0]
    return None


def _top_level(data: bytes, pos: int, implicit: bool, wanted: frozenset[int]) -> Scan | None:
    """The hot loop (one step per element, so written out flat)."""
    found: dict[int, tuple[str | None, bytes]] = {}
    end = len(data)
    explicit_header = _EXPLICIT.unpack_from
    implicit_header = _HEADER.unpack_from
    long_length = _LONG.unpack_from
    while pos + 8 < end:
        if implicit:
            group, element, length = implicit_header(data, pos)
            vr = None
            start = pos + 8
        else:
            group, element, code, length = explicit_header(data, pos)
            if code in _SHORT_VRS:
                start = pos + 8
            elif code in LONG_VRS and pos + 12 <= end:
                (length,) = long_length(data, pos + 8)
                start = pos + 12
            else:
                return None  # an unknown VR, or a delimiter at the top level
            vr = _VR_NAMES[code]
        tag = (group << 16) | element
        if tag in _PIXELS:
            return Scan(found, pos, implicit)
        if group == 0xFFFE:
            return None  # a delimiter at the top level: malformed
        if length == _UNDEFINED:
            if not (implicit or vr in ("SQ", "UN")):
                return None
            after = _skip_sequence(data, start, implicit or vr == "UN", 0)
            if after is None:
                return None
            pos = after
            continue
        pos = start + length
        if pos > end:
            return None
        if tag in wanted:
            found[tag] = (vr, data[start:pos])
    return None  # no pixel data within the data: pydicom judges what that means


def _skip_sequence(data: bytes, pos: int, implicit: bool, depth: int) -> int | None:
    """The offset after the undefined-length sequence whose items start at ``pos``."""
    if depth > _MAX_DEPTH:
        return None
    end = len(data)
    while pos + 8 <= end:
        group, element, length = _HEADER.unpack_from(data, pos)
        tag = (group << 16) | element
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            return None
        if length != _UNDEFINED:
            pos += length
            continue
        after = _skip_item(data, pos, implicit, depth + 1)
        if after is None:
            return None
        pos = after
    return None


def _skip_item(data: bytes, pos: int, implicit: bool, depth: int) -> int | None:
    """The offset after the undefined-length item whose elements start at ``pos``."""
    end = len(data)
    while pos + 8 <= end:
        group, element, _length = _HEADER.unpack_from(data, pos)
        if (group << 16) | element == _ITEM_END:
            return pos + 8
        if group == 0xFFFE:
            return None
        header = _element(data, pos, implicit)
        if header is None:
            return None
        vr, start, length = header
        if length == _UNDEFINED:
            if not (implicit or vr in ("SQ", "UN")):
                return None
            after = _skip_sequence(data, start, implicit or vr == "UN", depth)
            if after is None:
                return None
            pos = after
        else:
            pos = start + length
    return None
