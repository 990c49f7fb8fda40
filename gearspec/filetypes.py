"""Flywheel-style file types guessed from file names (for local runs without a catalog)."""

from __future__ import annotations

# Longest suffixes first so ".nii.gz" wins over ".gz".
_SUFFIX_TYPES: tuple[tuple[str, str], ...] = (
    (".dicom.zip", "dicom"),
    (".dcm.zip", "dicom"),
    (".nii.gz", "nifti"),
    (".mnc.gz", "minc"),
    (".tar.gz", "archive"),
    (".dcm", "dicom"),
    (".dicom", "dicom"),
    (".ima", "dicom"),
    (".nii", "nifti"),
    (".mgz", "MGH data"),
    (".mgh", "MGH data"),
    (".mnc", "minc"),
    (".bval", "bval"),
    (".bvals", "bval"),
    (".bvec", "bvec"),
    (".bvecs", "bvec"),
    (".par", "parrec"),
    (".rec", "parrec"),
    (".h5", "hdf5"),
    (".hdf5", "hdf5"),
    (".json", "source code"),
    (".py", "source code"),
    (".m", "source code"),
    (".sh", "source code"),
    (".csv", "tabular data"),
    (".tsv", "tabular data"),
    (".txt", "text"),
    (".log", "log"),
    (".pdf", "pdf"),
    (".png", "image"),
    (".jpg", "image"),
    (".jpeg", "image"),
    (".tif", "image"),
    (".tiff", "image"),
    (".html", "HTML"),
    (".zip", "archive"),
    (".tgz", "archive"),
    (".tar", "archive"),
)


def guess_file_type(file_name: str) -> str | None:
    """The Flywheel file type suggested by the name's suffix, or None when unknown."""
    lowered = file_name.lower()
    for suffix, kind in _SUFFIX_TYPES:
        if lowered.endswith(suffix):
            return kind
    return None
