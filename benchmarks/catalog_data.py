"""Synthetic catalog content for ``benchmarks/catalog.py``: a realistic imaging hierarchy.

Per project: 20 subjects x 2 sessions x 5 acquisitions (T1w, T2w, DWI, BOLD, FLAIR) x 50
files (DICOM slices, a NIfTI, its JSON sidecar, bval/bvec for DWI), so 10,000 files per
project and 100 projects for a million rows.  Every file carries a DICOM-like ``info``
(PatientID, SeriesDescription, EchoTime, ...); subjects carry ``age``/``sex``.  Everything is
deterministic (seeded per container), so every database receives identical rows.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, text

from catalog.bulk import FileRow
from catalog.models import Container

SUBJECTS = 20
SESSIONS = 2
ACQUISITIONS = 5
FILES = 50
FILES_PER_PROJECT = SUBJECTS * SESSIONS * ACQUISITIONS * FILES
# name, intent, measurement, EchoTime, RepetitionTime, FlipAngle, SliceThickness
PROTOCOLS = (
    ("T1w_MPRAGE", "Structural", "T1", 0.00298, 2.3, 9.0, 1.0),
    ("T2w_SPACE", "Structural", "T2", 0.409, 3.2, 120.0, 1.0),
    ("DWI_64dir", "Structural", "Diffusion", 0.089, 8.7, 90.0, 2.0),
    ("rsfMRI_BOLD", "Functional", "T2*", 0.03, 0.8, 52.0, 2.4),
    ("FLAIR", "Structural", "FLAIR", 0.388, 5.0, 120.0, 1.0),
)
NAMES = ("Müller^Jürgen", "O'Brien^Siobhán", 'Smith^"Bob"', "Nguyễn^Thị", "Kowalski^Zoë")


@dataclass(frozen=True)
class Acquisition:
    """One acquisition with what its files need."""

    id: int
    seed: int
    label: str
    protocol: int
    patient_id: str
    patient_name: str
    study_uid: str


@dataclass
class Plan:
    """The containers (rows for the ``containers`` table) and acquisitions to fill."""

    rows: int
    containers: list[dict[str, Any]]
    acquisitions: list[Acquisition]
    projects: list[str]
    ages: dict[str, int]  # PatientID -> subject age


def plan(rows: int, seed: int = 7) -> Plan:
    """The hierarchy holding ``rows`` files (the last subject may be partly filled)."""
    now = datetime.now(UTC)
    needed = -(-rows // FILES)
    out = Plan(rows, [], [], [], {})
    next_id = iter(range(1, 10**9))

    def add(
        level: str, label: str, parent: dict[str, Any] | None, info: dict[str, Any]
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": next(next_id),
            "level": level,
            "label": label,
            "parent_id": parent["id"] if parent else None,
            "info": info,
            "tags": [],
            "created": now,
            "modified": now,
            **{f"{lvl}_id": None for lvl in ("group", "project", "subject", "session")},
            "acquisition_id": None,
        }
        if parent is not None:
            for lvl in ("group", "project", "subject", "session"):
                row[f"{lvl}_id"] = parent[f"{lvl}_id"]
            row[f"{parent['level']}_id"] = parent["id"]
        out.containers.append(row)
        return row

    group = add("group", "bench", None, {})
    pnum = 0
    while len(out.acquisitions) < needed:
        project = add("project", f"proj-{pnum:03d}", group, {"site": f"site-{pnum % 7}"})
        out.projects.append(project["label"])
        for snum in range(SUBJECTS):
            if len(out.acquisitions) >= needed:
                break
            rng = random.Random(seed * 1_000_003 + pnum * 1000 + snum)
            patient = f"P{pnum:03d}{snum:02d}"
            age = rng.randint(20, 80)
            out.ages[patient] = age
            subject = add(
                "subject",
                f"sub-{pnum:03d}-{snum:02d}",
                project,
                {"age": age, "sex": rng.choice("MF"), "handedness": rng.choice("RRRRL")},
            )
            for vnum in range(SESSIONS):
                session = add(
                    "session",
                    f"ses-{vnum + 1:02d}",
                    subject,
                    {"weight_kg": round(rng.uniform(45, 110), 1), "operator": "tech-1"},
                )
                study_uid = f"1.2.840.99999.{pnum}.{snum}.{vnum}"
                for anum, proto in enumerate(PROTOCOLS):
                    series = rng.randint(1, 40)
                    acq = add("acquisition", f"{series} - {proto[0]}", session, {})
                    out.acquisitions.append(
                        Acquisition(
                            acq["id"],
                            rng.randrange(2**32),
                            acq["label"],
                            anum,
                            patient,
                            NAMES[snum % len(NAMES)],
                            study_uid,
                        )
                    )
        pnum += 1
    return out


def insert_containers(engine: Engine, hierarchy: Plan) -> None:
    """Write the containers with their fixed ids (and move PostgreSQL's id sequence past them)."""
    with engine.begin() as conn:
        conn.execute(insert(Container.metadata.tables["containers"]), hierarchy.containers)
        if engine.dialect.name == "postgresql":
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence('containers', 'id'), :n)"),
                {"n": len(hierarchy.containers)},
            )


def file_rows(acq: Acquisition) -> list[FileRow]:
    """The 50 files of an acquisition (DICOM slices, NIfTI, sidecar, bval/bvec for DWI)."""
    rng = random.Random(acq.seed)
    name, intent, measurement, te, tr, flip, thick = PROTOCOLS[acq.protocol]
    series_uid = f"{acq.study_uid}.{acq.id}"
    common = {
        "PatientID": acq.patient_id,
        "PatientName": acq.patient_name,
        "StudyInstanceUID": acq.study_uid,
        "SeriesInstanceUID": series_uid,
        "SeriesDescription": name,
        "SeriesNumber": int(acq.label.split(" ", 1)[0]),
        "EchoTime": te,
        "RepetitionTime": tr,
        "FlipAngle": flip,
        "SliceThickness": thick,
        "MagneticFieldStrength": 3,
        "Manufacturer": "SIEMENS",
        "ManufacturerModelName": "Prisma_fit",
        "InstitutionName": "Hôpital Universitaire",
        "AcquisitionDate": f"2023{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
    }
    classification = {"Intent": [intent], "Measurement": [measurement]}
    extras = ["bval", "bvec"] if name.startswith("DWI") else []
    n_dicom = FILES - 2 - len(extras)
    out = []
    for k in range(n_dicom):
        info = {
            **common,
            "InstanceNumber": k + 1,
            "SOPInstanceUID": f"{series_uid}.{k + 1}",
            "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
            "PixelSpacing": [thick, thick],
            "SliceLocation": round(-80.0 + k * thick, 2),
        }
        out.append(_row(acq, f"IM-{acq.id:06d}-{k + 1:04d}.dcm", info, classification, "dicom"))
    base = f"{acq.patient_id}_{name}"
    out.append(_row(acq, f"{base}.nii.gz", common, classification, None))
    out.append(_row(acq, f"{base}.json", {"PatientID": acq.patient_id}, {}, None))
    for ext in extras:
        out.append(_row(acq, f"{base}.{ext}", {"PatientID": acq.patient_id}, {}, None))
    return out


def _row(
    acq: Acquisition, name: str, info: dict[str, Any], cls: dict[str, Any], ftype: str | None
) -> FileRow:
    digest = hashlib.sha256(f"{acq.id}/{name}".encode()).hexdigest()
    return FileRow(
        container_id=acq.id,
        name=name,
        size=len(digest) * 4096 + len(name),
        sha256=digest,
        type=ftype,
        modality="MR",
        classification=cls,
        info=info,
        origin_id="bench-ingest",
    )


def batches(hierarchy: Plan, size: int) -> Iterator[list[FileRow]]:
    """The plan's file rows (exactly ``hierarchy.rows``) in batches of about ``size``."""
    batch: list[FileRow] = []
    left = hierarchy.rows
    for acq in hierarchy.acquisitions:
        rows = file_rows(acq)[:left]
        left -= len(rows)
        batch += rows
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
