"""Synthetic MR DICOM series with realistic headers, for the demo, tests and benchmarks.

Pixel data is deterministic noise; headers carry the fields a scanner export has (patient,
study, series, geometry, timing), so parsing costs what it costs on real data.
"""

from __future__ import annotations

import hashlib
import io
import random
import zipfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

_ORG_ROOT = "1.2.826.0.1.3680043.10.1419."


def uid_for(*parts: object) -> str:
    """A deterministic, valid DICOM UID derived from ``parts``."""
    digest = int(hashlib.sha256(repr(parts).encode()).hexdigest()[:24], 16)
    return f"{_ORG_ROOT}{digest}"[:64]


@dataclass(frozen=True)
class SeriesSpec:
    """One series to generate."""

    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    series_number: int
    description: str
    slices: int = 4
    rows: int = 64
    columns: int = 64
    study_date: date = date(2024, 3, 14)
    birth_date: date = date(1980, 1, 1)
    sex: str = "O"
    study_description: str = "Research MRI"


def make_slice(spec: SeriesSpec, index: int, seed: int = 0) -> Dataset:
    """One MR image slice of ``spec`` as a pydicom dataset with file meta."""
    sop_uid = UID(uid_for(spec.series_uid, index))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(prefix=_ORG_ROOT)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.PatientID = spec.patient_id
    ds.PatientName = spec.patient_name
    ds.PatientBirthDate = spec.birth_date.strftime("%Y%m%d")
    ds.PatientSex = spec.sex
    ds.PatientAge = f"{(spec.study_date - spec.birth_date).days // 365:03d}Y"
    ds.PatientWeight = "70"
    ds.StudyInstanceUID = spec.study_uid
    ds.StudyDate = spec.study_date.strftime("%Y%m%d")
    ds.StudyTime = "101500"
    ds.StudyDescription = spec.study_description
    ds.StudyID = "1"
    ds.AccessionNumber = f"ACC{abs(hash(spec.study_uid)) % 10**8:08d}"
    ds.ReferringPhysicianName = "Doe^Jane"
    ds.InstitutionName = "Gearbroker Research Imaging Center"
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "Prisma"
    ds.MagneticFieldStrength = "3"
    ds.Modality = "MR"
    ds.SeriesInstanceUID = spec.series_uid
    ds.SeriesNumber = spec.series_number
    ds.SeriesDescription = spec.description
    ds.ProtocolName = spec.description
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = f"10{15 + spec.series_number % 40:02d}00"
    ds.AcquisitionTime = f"1016{index % 60:02d}"
    ds.InstanceNumber = index + 1
    ds.FrameOfReferenceUID = uid_for(spec.study_uid, "frame")
    ds.ImagePositionPatient = [-100.0, -100.0, float(index) * 2.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceThickness = "2.0"
    ds.SliceLocation = str(float(index) * 2.0)
    ds.PixelSpacing = [1.0, 1.0]
    ds.RepetitionTime = "2300"
    ds.EchoTime = "2.98"
    ds.FlipAngle = "9"
    ds.ScanningSequence = "GR\\IR"
    ds.SequenceVariant = "SK\\SP\\MP"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    rng = random.Random(f"{seed}:{spec.series_uid}:{index}")
    ds.PixelData = rng.randbytes(spec.rows * spec.columns * 2)
    return ds


def write_series(spec: SeriesSpec, folder: Path, seed: int = 0) -> list[Path]:
    """Write every slice of ``spec`` as ``<folder>/<series>_<n>.dcm``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(spec.slices):
        path = folder / f"{spec.series_number:03d}_{index + 1:04d}.dcm"
        make_slice(spec, index, seed).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_series_zip(spec: SeriesSpec, path: Path, seed: int = 0) -> Path:
    """Write the series as one ``.dicom.zip`` archive (Flywheel's convention per acquisition)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index in range(spec.slices):
            buffer = io.BytesIO()
            make_slice(spec, index, seed).save_as(buffer, enforce_file_format=True)
            archive.writestr(f"{spec.series_number:03d}_{index + 1:04d}.dcm", buffer.getvalue())
    return path


def demo_series(subject: int, session: int = 1) -> list[SeriesSpec]:
    """A T1w and a BOLD series for one subject's session (stable UIDs)."""
    pid = f"sub-{subject:02d}"
    study = uid_for(pid, session)
    return [
        SeriesSpec(
            pid,
            f"Subject^{subject:02d}",
            study,
            uid_for(study, 1),
            1,
            "T1w_MPRAGE",
            birth_date=date(1950 + 7 * subject, 5, 1),
            sex="F" if subject % 2 else "M",
        ),
        SeriesSpec(
            pid,
            f"Subject^{subject:02d}",
            study,
            uid_for(study, 2),
            2,
            "fMRI_rest",
            birth_date=date(1950 + 7 * subject, 5, 1),
            sex="F" if subject % 2 else "M",
        ),
    ]


@dataclass(frozen=True)
class CorpusFile:
    """One file of a generated corpus: its path relative to the root and what it is."""

    path: str
    series_uid: str | None
    sop_uid: str | None


def corpus_series(
    subjects: int, sessions: int = 1, series: int = 2, slices: int = 4, size: int = 64
) -> list[SeriesSpec]:
    """Series specs of a corpus: ``subjects`` x ``sessions`` x ``series`` with stable UIDs."""
    descriptions = ("T1w_MPRAGE", "fMRI_rest", "DWI_64dir", "T2w_FLAIR", "localizer")
    specs = []
    for subject in range(1, subjects + 1):
        pid = f"P{subject:04d}"
        for session in range(1, sessions + 1):
            study = uid_for(pid, session)
            for number in range(1, series + 1):
                specs.append(
                    SeriesSpec(
                        pid,
                        f"Doe^Subject{subject:04d}",
                        study,
                        uid_for(study, number),
                        number,
                        descriptions[(number - 1) % len(descriptions)],
                        slices=slices,
                        rows=size,
                        columns=size,
                        study_date=date(2024, 1 + session % 12, 1 + subject % 28),
                        birth_date=date(1940 + subject % 60, 1 + subject % 12, 1 + subject % 28),
                        sex="F" if subject % 2 else "M",
                    )
                )
    return specs


def write_corpus(root: Path, specs: list[SeriesSpec], seed: int = 0) -> list[CorpusFile]:
    """Write every series under ``root/<PatientID>/<StudyUID>/<SeriesNumber>/``."""
    files = []
    for spec in specs:
        folder = root / spec.patient_id / spec.study_uid[-12:] / f"{spec.series_number:03d}"
        for index, path in enumerate(write_series(spec, folder, seed)):
            sop = uid_for(spec.series_uid, index)
            files.append(CorpusFile(str(path.relative_to(root)), spec.series_uid, sop))
    return files


def write_private_phi(spec: SeriesSpec, path: Path, index: int = 0, seed: int = 0) -> Path:
    """A slice of ``spec`` that also carries the patient's name in a private tag."""
    ds = make_slice(spec, index, seed)
    block = ds.private_block(0x0029, "GEARBROKER TEST", create=True)
    block.add_new(0x10, "LO", f"patient {spec.patient_name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
