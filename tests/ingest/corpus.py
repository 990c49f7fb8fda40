"""A generated DICOM corpus with the hazards an ingest must survive, and catalog helpers."""

from __future__ import annotations

import io
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from catalog.catalog import Catalog
from catalog.models import File
from ingest.synthetic import SeriesSpec, corpus_series, uid_for, write_corpus, write_private_phi

PHI_NAME = "Doe^Subject0001"


@dataclass(frozen=True)
class Corpus:
    """What was written: the series, the number of distinct good instances, the hazards."""

    root: Path
    specs: list[SeriesSpec]
    instances: int
    hazard_keys: dict[str, str]


def hazard_corpus(root: Path, subjects: int = 3, sessions: int = 2, series: int = 2) -> Corpus:
    """Series of several subjects/sessions plus: a truncated file, a non-DICOM file, a series
    split across two folders, a duplicate copy, a slice with PHI in a private tag."""
    specs = corpus_series(subjects, sessions, series, slices=5)
    files = write_corpus(root, specs)
    first = root / files[0].path
    data = first.read_bytes()
    (root / "P0001" / "truncated.dcm").write_bytes(data[: len(data) - 500])
    (root / "README.txt").write_text("not a DICOM file")
    shutil.copy(root / files[1].path, root / "P0002" / "copy_of_slice.dcm")
    moved = [f for f in files if f.path.startswith("P0003")][3:5]
    (root / "P0003" / "second_folder").mkdir()
    for item in moved:
        shutil.move(root / item.path, root / "P0003" / "second_folder" / Path(item.path).name)
    write_private_phi(specs[0], root / "P0001" / "private_phi.dcm", index=specs[0].slices)
    return Corpus(
        root,
        specs,
        instances=len(files) + 1,
        hazard_keys={
            "P0001/truncated.dcm": "error",
            "README.txt": "error",
            "P0002/copy_of_slice.dcm": "duplicate",
        },
    )


def current_files(cat: Catalog) -> list[File]:
    with cat.db.session(readonly=True) as session:
        return list(session.scalars(select(File).where(File.current).order_by(File.id)))


def all_files(cat: Catalog) -> list[File]:
    with cat.db.session(readonly=True) as session:
        return list(session.scalars(select(File).order_by(File.id)))


def blob(cat: Catalog, sha256: str) -> bytes:
    with cat.blobs.open(sha256) as fh:
        data: bytes = fh.read()
    return data


def zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def expected_series_sizes(corpus: Corpus) -> dict[str, int]:
    """Slices per series UID in the catalog (the PHI slice adds one to the first series)."""
    sizes = {spec.series_uid: spec.slices for spec in corpus.specs}
    sizes[corpus.specs[0].series_uid] += 1
    return sizes


def sop_uid(spec: SeriesSpec, index: int) -> str:
    return uid_for(spec.series_uid, index)


def summary_counts(report: dict[str, Any]) -> dict[str, int]:
    return {status: value["files"] for status, value in report["counts"].items()}
