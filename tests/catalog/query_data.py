"""A small catalog for search tests, inserted directly with the ORM (ancestor ids filled).

lab/brain
  s01/ses1 {age: 35, site: "A", tags [reviewed]}
    T1w_MPRAGE {EchoTime: 2.9}: t1.dcm (dicom, v2 current; v1 old), t1.nii.gz (nifti)
    fMRI_rest: bold.dcm (dicom, Functional)
    analyses/fs: aseg.stats (tabular)
  s02/ses1 {age: 25}
    T1w: t1.dcm (dicom)
  s03/ses1 {age: "40"}   <- a string, ignored by numeric comparisons
    T1w: t1.dcm (dicom, no classification)
  files: protocol.pdf (project-level file)
lab2/other
  x01/ses1 {age: 50}
    T1w: t1.dcm (dicom)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from catalog.catalog import Catalog
from catalog.models import LEVEL_CLASSES, Container, File, Level


def add(
    session: Session,
    level: Level,
    label: str,
    parent: Container | None = None,
    **attrs: Any,
) -> Container:
    node = LEVEL_CLASSES[level](label=label, parent_id=parent.id if parent else None, **attrs)
    if parent is not None:
        for column, value in parent.ancestor_ids().items():
            setattr(node, column, value)
    session.add(node)
    session.flush()
    return node


def add_file(session: Session, container: Container, name: str, **attrs: Any) -> File:
    attrs.setdefault("size", 100)
    attrs.setdefault("sha256", "0" * 64)
    node = File(container_id=container.id, name=name, **container.ancestor_ids(), **attrs)
    session.add(node)
    session.flush()
    return node


@dataclass
class Data:
    """Ids of the objects the tests talk about, by short name."""

    ids: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> int:
        return self.ids[name]


T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2024, 6, 15, 8, 30, tzinfo=UTC)


def build(cat: Catalog) -> Data:
    data = Data()
    ids = data.ids
    with cat.db.session() as s:
        lab = add(s, Level.GROUP, "lab")
        brain = add(s, Level.PROJECT, "brain", lab, info={"pi": "Ada"})
        ids |= {"lab": lab.id, "brain": brain.id}

        s01 = add(s, Level.SUBJECT, "s01", brain, info={"sex": "F"})
        ses1 = add(
            s,
            Level.SESSION,
            "ses1",
            s01,
            info={"age": 35, "site": "A"},
            tags=["reviewed"],
            created=T0,
        )
        t1 = add(s, Level.ACQUISITION, "T1w_MPRAGE", ses1, info={"EchoTime": 2.9}, created=T0)
        rest = add(s, Level.ACQUISITION, "fMRI_rest", ses1, created=T1)
        ids |= {"s01": s01.id, "s01/ses1": ses1.id, "s01/T1": t1.id, "s01/rest": rest.id}
        add_file(
            s, t1, "t1.dcm", type="dicom", version=1, current=False, info={"PatientID": "P001"}
        )
        ids["s01/t1.dcm"] = add_file(
            s,
            t1,
            "t1.dcm",
            type="dicom",
            version=2,
            size=2048,
            modality="MR",
            info={
                "PatientID": "P001",
                "SeriesNumber": 3,
                "Flags": ["a", 7],
                "Desc": "sag MPRAGE",
                "Derived": False,
            },
            classification={"Intent": ["Structural"], "Measurement": ["T1"]},
            tags=["qc-pass"],
            created=T0,
        ).id
        ids["s01/t1.nii.gz"] = add_file(
            s,
            t1,
            "t1.nii.gz",
            type="nifti",
            size=4096,
            info={"PatientID": "P001", "Derived": True},
            classification={"Intent": ["Structural"], "Measurement": ["T1"]},
            created=T1,
        ).id
        ids["s01/bold.dcm"] = add_file(
            s,
            rest,
            "bold.dcm",
            type="dicom",
            size=8192,
            modality="MR",
            info={"PatientID": "P001", "SeriesNumber": 5},
            classification={"Intent": ["Functional"]},
            tags=["qc-fail", "motion"],
            created=T1,
        ).id
        fs = add(s, Level.ANALYSIS, "fs", ses1, info={"gear": "freesurfer"})
        ids["fs"] = fs.id
        ids["fs/aseg.stats"] = add_file(s, fs, "aseg.stats", type="tabular", size=10).id

        s02 = add(s, Level.SUBJECT, "s02", brain)
        ses2 = add(s, Level.SESSION, "ses1", s02, info={"age": 25})
        acq2 = add(s, Level.ACQUISITION, "T1w", ses2)
        ids |= {"s02": s02.id, "s02/ses1": ses2.id, "s02/T1": acq2.id}
        ids["s02/t1.dcm"] = add_file(
            s,
            acq2,
            "t1.dcm",
            type="dicom",
            info={"PatientID": "P002", "SeriesNumber": 3.0},
            classification={"Intent": ["Structural"], "Measurement": ["T1"]},
        ).id

        s03 = add(s, Level.SUBJECT, "s03", brain)
        ses3 = add(s, Level.SESSION, "ses1", s03, info={"age": "40"})
        acq3 = add(s, Level.ACQUISITION, "T1w", ses3)
        ids |= {"s03": s03.id, "s03/ses1": ses3.id}
        ids["s03/t1.dcm"] = add_file(s, acq3, "t1.dcm", type="dicom", info={"PatientID": "P003"}).id
        ids["protocol.pdf"] = add_file(s, brain, "protocol.pdf", type="pdf", size=5).id

        lab2 = add(s, Level.GROUP, "lab2")
        other = add(s, Level.PROJECT, "other", lab2)
        x01 = add(s, Level.SUBJECT, "x01", other)
        xses = add(s, Level.SESSION, "ses1", x01, info={"age": 50})
        xacq = add(s, Level.ACQUISITION, "T1w", xses)
        ids |= {"lab2": lab2.id, "other": other.id, "x01/ses1": xses.id}
        ids["x01/t1.dcm"] = add_file(s, xacq, "t1.dcm", type="dicom", info={"PatientID": "P004"}).id
    return data
