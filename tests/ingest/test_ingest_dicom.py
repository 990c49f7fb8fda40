"""DICOM ingests from a local folder (SQLite and PostgreSQL): packing, hazards, idempotence."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from catalog.catalog import Catalog
from catalog.gc import collect_garbage
from catalog.models import AuditEvent, Container, File, IngestItem
from ingest import report
from ingest.dicom import header_fields
from ingest.options import IngestOptions
from ingest.runs import create_run, load_run
from ingest.start import run_ingest, start_ingest
from ingest.synthetic import SeriesSpec, make_slice, uid_for
from tests.ingest.corpus import (
    all_files,
    blob,
    current_files,
    expected_series_sizes,
    hazard_corpus,
    summary_counts,
    zip_members,
)


def ingest(cat: Catalog, store_url: str, source: Path | str, **options: Any) -> dict[str, Any]:
    """Run one ingest to its end on a threaded local cluster; returns its report summary."""
    opts = IngestOptions(
        kind=options.pop("kind", "dicom"),
        source=str(source),
        group="lab",
        project=options.pop("project", "study"),
        **{"shard_files": 7, **options},
    )
    run_id = start_ingest(cat, opts)
    run_ingest(cat, run_id, store_url=store_url, cluster="threads", workers=2)
    return report.summary(cat.db, run_id)


@pytest.fixture
def lab(catalog: Catalog) -> Catalog:
    catalog.create_group("lab")
    return catalog


def test_packs_each_series_once_and_reports_every_hazard(
    lab: Catalog, store_url: str, tmp_path: Path
) -> None:
    corpus = hazard_corpus(tmp_path / "src")
    summary = ingest(lab, store_url, corpus.root)
    assert summary["state"] == "done"
    assert summary_counts(summary) == {"stored": corpus.instances, "error": 2, "duplicate": 1}
    problems = {
        key: (status, reason) for key, status, reason in report.problems(lab.db, summary["id"])
    }
    assert problems["P0001/truncated.dcm"][0] == "error"
    assert "truncated" in problems["P0001/truncated.dcm"][1]
    assert problems["README.txt"] == ("error", problems["README.txt"][1])
    assert "not a DICOM file" in problems["README.txt"][1]
    assert problems["P0002/copy_of_slice.dcm"][0] == "duplicate"

    files = current_files(lab)
    sizes = expected_series_sizes(corpus)
    assert len(files) == len(sizes)  # one zip per series, the split series included
    for file in files:
        assert file.name.endswith(".dicom.zip") and file.type == "dicom"
        members = zip_members(blob(lab, file.sha256))
        series_uid = file.info["header"]["dicom"]["SeriesInstanceUID"]
        assert len(members) == sizes[series_uid]
        for data in members.values():
            assert dcmread(io.BytesIO(data)).SeriesInstanceUID == series_uid
        assert file.modality == "MR"
    t1 = next(f for f in files if f.name == "1 - T1w_MPRAGE.dicom.zip")
    assert t1.classification == {"Intent": ["Structural"], "Measurement": ["T1"]}
    assert t1.origin_type == "ingest"

    tree = {n.label: n for n in lab.tree("lab/study", depth=3, files=False)}
    assert sorted(tree) == ["P0001", "P0002", "P0003"]
    sessions = tree["P0001"].children
    assert len(sessions) == 2 and all(s.label.endswith("Research MRI") for s in sessions)
    assert sorted(a.label for a in sessions[0].children) == ["1 - T1w_MPRAGE", "2 - fMRI_rest"]

    with lab.db.session(readonly=True) as session:
        actions = list(session.scalars(select(AuditEvent.action)))
    assert actions.count("ingest.start") == 1 and actions.count("ingest.finish") == 1
    assert "ingest.batch" in actions and "upload" not in actions

    again = ingest(lab, store_url, corpus.root)  # the same ingest again: nothing changes
    assert summary_counts(again) == {"unchanged": corpus.instances, "error": 2, "duplicate": 1}
    assert [(f.id, f.sha256) for f in all_files(lab)] == [(f.id, f.sha256) for f in files]


def test_a_series_read_in_one_shard_keeps_its_scan_fragment_as_its_zip(
    lab: Catalog, store_url: str, tmp_path: Path
) -> None:
    corpus = hazard_corpus(tmp_path / "src", sessions=1)
    whole = ingest(lab, store_url, corpus.root, project="whole", shard_files=1000)
    split = ingest(lab, store_url, corpus.root, project="split", shard_files=3)
    assert summary_counts(whole) == summary_counts(split)
    whole_stats = load_run(lab.db, whole["id"]).stats
    split_stats = load_run(lab.db, split["id"]).stats
    assert whole_stats["packed"] == split_stats["packed"] == len(expected_series_sizes(corpus))
    assert whole_stats["repacked"] == 0  # no series read twice
    assert whole_stats["awaiting_pack"] == corpus.instances  # the scan's progress
    assert 0 < split_stats["repacked"] <= split_stats["packed"]

    def zips(project: str) -> dict[str, dict[str, bytes]]:
        files = [f for f in current_files(lab) if lab.path_of(f).startswith(f"lab/{project}/")]
        out = {}
        for f in files:
            header = f.info["header"]["dicom"]
            members = zip_members(blob(lab, f.sha256))
            first = next(iter(members))
            assert first == f"{header['SOPInstanceUID']}.dcm"  # its first member's header,
            assert header == header_fields(dcmread(io.BytesIO(members[first])))  # all of it
            out[header["SeriesInstanceUID"]] = members
        return out

    # Whole fragments and series packed again from split fragments hold the same members.
    assert zips("whole") == zips("split")
    with lab.db.session(readonly=True) as session:
        left = session.scalars(select(IngestItem).where(IngestItem.status == "scanned")).all()
        details = session.scalars(
            select(IngestItem.detail).where(IngestItem.run_id == whole["id"])
        ).all()
    assert left == []
    # Only a fragment's first member keeps its header in the run's items.
    assert sum("header" in d for d in details) == len(expected_series_sizes(corpus))


def test_gc_keeps_the_fragments_of_items_not_yet_packed(lab: Catalog, tmp_path: Path) -> None:
    project = lab.create_project("lab", "pending")
    fragment = lab.blobs.put_bytes(b"PK fragment of a series")
    run_id = create_run(lab.db, str(tmp_path), "dicom", project.id, {}, "tester")
    with lab.db.session() as session:
        item = IngestItem(run_id=run_id, shard=0, key="a.dcm", size=1, status="scanned",
                          group_key="s|t", sha256=fragment.sha256)  # fmt: skip
        session.add(item)
    assert collect_garbage(lab, grace_seconds=0).deleted == 0
    assert lab.blobs.exists(fragment.sha256)
    with lab.db.session() as session:
        session.execute(update(IngestItem).values(status="error", sha256=None))
    assert collect_garbage(lab, grace_seconds=0).deleted == 1


def test_no_pack_stores_each_instance_once(lab: Catalog, store_url: str, tmp_path: Path) -> None:
    corpus = hazard_corpus(tmp_path / "src")
    summary = ingest(lab, store_url, corpus.root, pack=False)
    assert summary_counts(summary) == {"stored": corpus.instances, "error": 2, "duplicate": 1}
    files = current_files(lab)
    assert len(files) == corpus.instances
    assert all(
        f.name.endswith(".dcm") and f.name[:-4] == f.info["header"]["dicom"]["SOPInstanceUID"]
        for f in files
    )
    with lab.db.session(readonly=True) as session:
        details = session.scalars(select(IngestItem.detail)).all()
    assert not any("header" in d for d in details)  # the files' info holds them, once
    again = ingest(lab, store_url, corpus.root, pack=False)
    # Both copies of the duplicated slice now match the stored file: unchanged.
    assert summary_counts(again) == {"unchanged": corpus.instances + 1, "error": 2}
    assert len(all_files(lab)) == corpus.instances


def test_skip_existing_only_reads_new_files(lab: Catalog, store_url: str, tmp_path: Path) -> None:
    corpus = hazard_corpus(tmp_path / "src")
    first = ingest(lab, store_url, corpus.root, exclude=("P0003/*",), pack=False)
    stored_first = summary_counts(first)["stored"]
    second = ingest(lab, store_url, corpus.root, skip_existing=True, pack=False)
    counts = summary_counts(second)
    assert counts["skipped"] == stored_first  # known from the first run: never read again
    assert counts["stored"] == corpus.instances - stored_first
    reasons = {r for _k, s, r in report.problems(lab.db, second["id"]) if s == "skipped"}
    assert reasons == {"stored by an earlier ingest"}
    assert len(all_files(lab)) == corpus.instances


def test_a_nul_inside_a_header_value_is_stored_on_both_databases(
    lab: Catalog, store_url: str, tmp_path: Path
) -> None:
    """PostgreSQL's jsonb cannot hold NUL: one corrupt header must not fail the batch."""
    root = tmp_path / "src"
    root.mkdir()
    spec = SeriesSpec("P7", "A^B", uid_for("nul-study"), uid_for("nul-series"), 2, "T1w")
    for index in range(2):
        ds = make_slice(spec, index)
        ds.StudyDescription = "Brain\x00MRI"
        ds.save_as(root / f"{index}.dcm", enforce_file_format=True)
    summary = ingest(lab, store_url, root, pack=False)
    assert summary_counts(summary) == {"stored": 2}
    headers = [f.info["header"]["dicom"] for f in current_files(lab)]
    assert [h["StudyDescription"] for h in headers] == ["Brain\ufffdMRI"] * 2


def test_same_series_in_two_studies_and_missing_uids(
    lab: Catalog, store_url: str, tmp_path: Path
) -> None:
    shared = uid_for("shared-series")
    root = tmp_path / "src"
    root.mkdir()
    for study in (1, 2):
        spec = SeriesSpec("P9", "X^Y", uid_for("study", study), shared, 3, "T2w", slices=2)
        for index in range(2):
            make_slice(spec, index).save_as(
                root / f"s{study}_{index}.dcm", enforce_file_format=True
            )
    orphan = make_slice(SeriesSpec("P9", "X^Y", uid_for("study", 1), generate_uid(), 4, "DWI"), 0)
    del orphan.SeriesInstanceUID
    orphan.save_as(root / "no_series_uid.dcm", enforce_file_format=True)

    loose = ingest(lab, store_url, root)
    assert summary_counts(loose) == {"stored": 5}
    hazards = {h["key"]: h["hazards"] for h in loose["hazards"]}
    assert hazards["no_series_uid.dcm"] == ["missing SeriesInstanceUID"]
    assert any("another study" in h[0] for h in hazards.values())
    with lab.db.session(readonly=True) as session:
        acquisitions = session.scalars(
            select(Container).where(Container.level == "acquisition")
        ).all()
    assert sorted(a.label for a in acquisitions) == ["3 - T2w", "3 - T2w", "4 - DWI"]

    strict = ingest(lab, store_url, root, strict_uid=True, project="strict")
    assert summary_counts(strict) == {"error": 5}
    reasons = sorted({r for _k, _s, r in report.problems(lab.db, strict["id"])})
    assert reasons == [
        "SeriesInstanceUID also in another study (--strict-uid)",
        "missing SeriesInstanceUID (--strict-uid)",
    ]


def test_dry_run_prints_the_plan_and_writes_nothing(
    lab: Catalog, store_url: str, tmp_path: Path
) -> None:
    corpus = hazard_corpus(tmp_path / "src")
    summary = ingest(lab, store_url, corpus.root, dry_run=True)
    assert summary["state"] == "planned"
    assert current_files(lab) == []
    rows = list(report.plan(lab.db, summary["id"]))
    assert len(rows) == len(corpus.specs)
    assert all(r.create == ("subject", "session", "acquisition") for r in rows)
    assert sum(r.files for r in rows) == corpus.instances + 1  # the duplicate is found later
    ingest(lab, store_url, corpus.root)
    again = ingest(lab, store_url, corpus.root, dry_run=True)
    rows = list(report.plan(lab.db, again["id"]))
    assert all(r.create == () and r.existing_names == 1 for r in rows)


def test_folder_template_with_duplicates(lab: Catalog, store_url: str, tmp_path: Path) -> None:
    root = tmp_path / "src"
    for sub, ses, acq, name, text in [
        ("s1", "base", "anat", "t1.nii", "A"),
        ("s1", "base", "anat", "t1_copy.nii", "A"),
        ("s1", "base", "func", "bold.nii", "B"),
        ("s2", "base", "anat", "t1.nii", "C"),
    ]:
        (root / f"sub-{sub}" / f"ses-{ses}" / acq).mkdir(parents=True, exist_ok=True)
        (root / f"sub-{sub}" / f"ses-{ses}" / acq / name).write_text(text)
    (root / "stray.txt").write_text("outside the template")
    summary = ingest(
        lab, store_url, root, kind="folder", template="sub-{subject}/ses-{session}/{acquisition}/*",
        detect_duplicates=True,
    )  # fmt: skip
    assert summary_counts(summary) == {"stored": 3, "duplicate": 1, "skipped": 1}
    first, other = (lab.get(f"lab/study/{sub}/base/anat/files/t1.nii") for sub in ("s1", "s2"))
    assert isinstance(first, File) and isinstance(other, File)
    assert first.size == 1 and first.sha256 != other.sha256


def test_ingest_needs_write_access(
    lab: Catalog, as_user: Any, store_url: str, tmp_path: Path
) -> None:
    from catalog.errors import PermissionDeniedError

    lab.create_project("lab", "study")
    reader = as_user("reader")
    lab.add_permission("lab/study", "reader", "ro")
    with pytest.raises(PermissionDeniedError):
        ingest(reader, store_url, hazard_corpus(tmp_path / "src").root)
