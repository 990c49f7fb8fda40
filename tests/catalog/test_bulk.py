"""Bulk insertion of file rows on SQLite and PostgreSQL (catalog.bulk)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import func, select, text

from catalog.blobstore import BlobInfo
from catalog.bulk import FileRow, bulk_insert_files, lookup_ancestors
from catalog.catalog import Catalog
from catalog.errors import ConflictError, InvalidInputError, NotFoundError
from catalog.models import Container, File, Level
from catalog.transfer import add_file_version
from catalog.tree import new_container

ACQ = ("lab", "study", "sub-01", "ses-01", "anat")
TRICKY = {
    "PatientName": "Müller^Zoë \"the quoted\" 'single' back\\slash\ttab\nnewline",
    "emoji": "🧠 ünïcødé 日本語",
    "nested": {"list": [1, 2.5, None, True, "x\\y"], "empty": {}},
    "EchoTime": 0.00298,
}


@pytest.fixture
def acq_id(catalog: Catalog) -> int:
    catalog.create_group("lab")
    catalog.create_project("lab", "study")
    with catalog.db.session() as session:
        return catalog.ensure_path(session, ACQ).id


def _sha(text_: str) -> str:
    return hashlib.sha256(text_.encode()).hexdigest()


def _columns(row: File) -> dict[str, Any]:
    skip = {"id", "name", "created", "modified"}
    return {c.key: getattr(row, c.key) for c in File.__table__.columns if c.key not in skip}


def _count(catalog: Catalog) -> int:
    with catalog.db.session(readonly=True) as session:
        return session.scalar(select(func.count()).select_from(File)) or 0


def test_rows_match_what_add_file_version_writes(catalog: Catalog, acq_id: int) -> None:
    meta: dict[str, Any] = {
        "modality": "MR",
        "classification": {"Intent": ["Structural"], "Measurement": ["T1"]},
        "info": TRICKY,
        "tags": ["raw", "qc-pass"],
        "origin_type": "ingest",
        "origin_id": "admin",
    }
    with catalog.db.session() as session:
        container = session.get(Container, acq_id)
        assert container is not None
        add_file_version(
            session,
            catalog.actor,
            container,
            "a.nii.gz",
            BlobInfo(_sha("a"), 3),
            **meta,
        )
        assert bulk_insert_files(session, [FileRow(acq_id, "b.nii.gz", 3, _sha("a"), **meta)]) == 1
    with catalog.db.session(readonly=True) as session:
        single, bulk = session.scalars(select(File).order_by(File.name)).all()
        assert _columns(bulk) == _columns(single)
        assert bulk.type == "nifti"  # detected from the name, like the one-at-a-time path
        assert bulk.acquisition_id == acq_id and bulk.group_id is not None
        assert bulk.info == TRICKY
        assert type(bulk.created) is type(single.created)
        assert bulk.created == bulk.modified
        # Stored forms are identical too (timestamp text format on SQLite, JSON text).
        raw = session.execute(
            text("SELECT name, created, info, classification, tags FROM files ORDER BY name")
        ).all()
        (_, c1, *json1), (_, c2, *json2) = raw
        assert type(c1) is type(c2)
        assert json1 == json2
        if catalog.db.dialect == "sqlite":
            assert len(c1) == len(c2)


def test_json_is_stored_as_json_not_as_a_string(catalog: Catalog, acq_id: int) -> None:
    with catalog.db.session() as session:
        bulk_insert_files(session, [FileRow(acq_id, "x.dcm", 1, _sha("x"), info=TRICKY)])
    extract = (
        "json_extract(info, '$.PatientName')"
        if catalog.db.dialect == "sqlite"
        else "info ->> 'PatientName'"
    )
    with catalog.db.session(readonly=True) as session:
        assert session.scalar(text(f"SELECT {extract} FROM files")) == TRICKY["PatientName"]


def test_ancestor_ids_come_from_the_container(catalog: Catalog, acq_id: int) -> None:
    with catalog.db.session() as session:
        acq = session.get(Container, acq_id)
        assert acq is not None
        project_id = acq.project_id
        assert project_id is not None
        expected = acq.ancestor_ids()
        looked_up = lookup_ancestors(session, [acq_id, project_id, 999_999])
        assert looked_up[acq_id] == expected
        assert 999_999 not in looked_up
        bulk_insert_files(
            session,
            [
                FileRow(acq_id, "1.dcm", 1, _sha("1"), type="dicom"),
                FileRow(project_id, "notes.txt", 1, _sha("2")),
            ],
        )
        # A caller-supplied map is used as given.
        bulk_insert_files(
            session, [FileRow(acq_id, "2.dcm", 1, _sha("3"))], ancestors={acq_id: expected}
        )
    with catalog.db.session(readonly=True) as session:
        files = {f.name: f for f in session.scalars(select(File))}
    for name in ("1.dcm", "2.dcm"):
        f = files[name]
        ids = {k: getattr(f, k) for k in expected}
        assert ids == expected
        assert f.type == "dicom" and f.mimetype == "application/dicom"
        assert f.current and f.version == 1
    notes = files["notes.txt"]
    assert notes.project_id == project_id and notes.subject_id is None
    assert notes.acquisition_id is None and notes.type == "text"


def test_name_clash_raises_conflict_and_inserts_nothing(catalog: Catalog, acq_id: int) -> None:
    with catalog.db.session() as session:
        bulk_insert_files(session, [FileRow(acq_id, "taken.dcm", 1, _sha("t"))])
    batch = [FileRow(acq_id, f"{i}.dcm", 1, _sha(str(i))) for i in range(50)]
    with catalog.db.session() as session:
        bulk_insert_files(session, [FileRow(acq_id, "kept.dcm", 1, _sha("k"))])
        with pytest.raises(ConflictError):
            bulk_insert_files(session, [*batch, FileRow(acq_id, "taken.dcm", 1, _sha("u"))])
        # The transaction is still usable and keeps the work done before the clash.
        bulk_insert_files(session, [FileRow(acq_id, "after.dcm", 1, _sha("a"))])
    with catalog.db.session() as session, pytest.raises(ConflictError):
        bulk_insert_files(session, [*batch, batch[0]])  # a duplicate inside one batch
    with catalog.db.session(readonly=True) as session:
        names = set(session.scalars(select(File.name)))
    assert names == {"taken.dcm", "kept.dcm", "after.dcm"}


def test_bad_input_is_rejected_before_writing(catalog: Catalog, acq_id: int) -> None:
    with catalog.db.session() as session:
        with pytest.raises(NotFoundError):
            bulk_insert_files(session, [FileRow(987_654, "x.dcm", 1, _sha("x"))])
        for bad in ("", "a/b", "..", "tab\there", "x" * 1025):
            with pytest.raises(InvalidInputError):
                bulk_insert_files(session, [FileRow(acq_id, bad, 1, _sha("x"))])
        assert bulk_insert_files(session, []) == 0
    assert _count(catalog) == 0


def test_many_rows_in_one_call(catalog: Catalog) -> None:
    catalog.create_group("lab")
    catalog.create_project("lab", "study")
    with catalog.db.session() as session:
        parents = [catalog.ensure_path(session, (*ACQ[:4], f"acq-{i}")) for i in range(3)]
        analysis = new_container(session, parents[0], "an-1", Level.ANALYSIS)
    rows = [
        FileRow(parents[i % 3].id, f"f{i:05d}.dcm", i, _sha(str(i)), info={"InstanceNumber": i})
        for i in range(6000)
    ]
    with catalog.db.session() as session:
        assert bulk_insert_files(session, rows) == 6000
        bulk_insert_files(session, [FileRow(analysis.id, "out.nii", 1, _sha("o"))])
    with catalog.db.session(readonly=True) as session:
        assert session.scalar(select(func.sum(File.size))) == sum(range(6000)) + 1
        out = session.scalars(select(File).where(File.name == "out.nii")).one()
    assert out.session_id == parents[0].session_id and out.acquisition_id == parents[0].id
