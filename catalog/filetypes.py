"""File type and MIME type from a file name, with Flywheel's type vocabulary."""

from __future__ import annotations

import mimetypes

# (suffix, Flywheel type, mimetype); every suffix starts with "." and has one or two dots.
_SUFFIXES: tuple[tuple[str, str, str], ...] = (
    (".dicom.zip", "dicom", "application/zip"),
    (".dcm.zip", "dicom", "application/zip"),
    (".nii.gz", "nifti", "application/octet-stream"),
    (".mgh.gz", "MGH data", "application/octet-stream"),
    (".tar.gz", "archive", "application/gzip"),
    (".dcm", "dicom", "application/dicom"),
    (".dicom", "dicom", "application/dicom"),
    (".ima", "dicom", "application/dicom"),
    (".nii", "nifti", "application/octet-stream"),
    (".mgz", "MGH data", "application/octet-stream"),
    (".mgh", "MGH data", "application/octet-stream"),
    (".bval", "bval", "text/plain"),
    (".bvec", "bvec", "text/plain"),
    (".par", "parrec", "text/plain"),
    (".rec", "parrec", "application/octet-stream"),
    (".json", "source code", "application/json"),
    (".py", "source code", "text/x-python"),
    (".m", "source code", "text/plain"),
    (".sh", "source code", "text/x-sh"),
    (".csv", "tabular data", "text/csv"),
    (".tsv", "tabular data", "text/tab-separated-values"),
    (".txt", "text", "text/plain"),
    (".log", "log", "text/plain"),
    (".pdf", "pdf", "application/pdf"),
    (".html", "html", "text/html"),
    (".png", "image", "image/png"),
    (".jpg", "image", "image/jpeg"),
    (".jpeg", "image", "image/jpeg"),
    (".zip", "archive", "application/zip"),
    (".tgz", "archive", "application/gzip"),
    (".gz", "archive", "application/gzip"),
    (".edf", "eeg", "application/octet-stream"),
)


_BY_SUFFIX: dict[str, tuple[str, str]] = {s: (ftype, mime) for s, ftype, mime in _SUFFIXES}


def detect(name: str) -> tuple[str | None, str]:
    """(type, mimetype) for ``name``; type None when unknown.  The longest known suffix
    wins (``scan.dicom.zip`` is DICOM, ``scan.zip`` an archive)."""
    lower = name.lower()
    last = lower.rfind(".")
    if last >= 0:
        before = lower.rfind(".", 0, last)
        if before >= 0 and (known := _BY_SUFFIX.get(lower[before:])):
            return known
        if known := _BY_SUFFIX.get(lower[last:]):
            return known
    guessed, _ = mimetypes.guess_type(name)
    return None, guessed or "application/octet-stream"
