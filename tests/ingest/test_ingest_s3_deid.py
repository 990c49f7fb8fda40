"""S3 sources (a real moto server) and de-identification with --verify."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom import dcmread

from catalog.catalog import Catalog
from ingest import report, tasks
from ingest.deid import check_blob, load_profile
from ingest.driver import DeidVerifyError
from ingest.runs import list_runs
from ingest.sources import S3Source
from tests.ingest.corpus import PHI_NAME, blob, current_files, hazard_corpus, summary_counts
from tests.ingest.test_ingest_dicom import ingest

PROFILE = {
    "name": "strict-phi",
    "dicom": {
        "salt": "pepper",
        "date-increment": -30,
        "remove-private-tags": True,
        "fields": [
            {"name": "PatientName", "replace-with": "ANONYMOUS"},
            {"name": "PatientBirthDate", "remove": True},
            {"name": "ReferringPhysicianName", "remove": True},
            {"name": "AccessionNumber", "hash": True},
            {"name": "StudyDate", "increment-date": True},
            {"name": "(0008,0080)", "remove": True},
            {"name": "SOPInstanceUID", "hashuid": True},
            {"name": "PatientSex", "keep": True},
        ],
    },
}


@pytest.fixture
def lab(catalog: Catalog) -> Catalog:
    catalog.create_group("lab")
    return catalog


def _upload(client: Any, bucket: str, root: Path, prefix: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(root).as_posix()}")


def test_s3_source_lists_in_pages_and_reads_ranges(
    s3_client: Any, s3_bucket: str, s3_endpoint: str
) -> None:
    for index in range(25):
        s3_client.put_object(Bucket=s3_bucket, Key=f"in/k{index:03d}", Body=b"x" * index)
    s3_client.put_object(Bucket=s3_bucket, Key="other/file", Body=b"no")
    source = S3Source(s3_bucket, "in", endpoint_url=s3_endpoint)
    keys = [obj.key for obj in source.iter_objects()]
    assert keys == [f"k{i:03d}" for i in range(25)]
    assert [o.key for o in source.iter_objects("k020")] == [f"k{i:03d}" for i in range(21, 25)]
    assert source.read_range("k010", 2, 3) == b"xxx" and len(source.read("k024")) == 24
    assert source.read_range("k010", 2, 0) == b""


def test_s3_ingest_matches_the_folder_ingest(
    lab: Catalog, store_url: str, tmp_path: Path, s3_client: Any, s3_bucket: str, s3_endpoint: str
) -> None:
    corpus = hazard_corpus(tmp_path / "src")
    _upload(s3_client, s3_bucket, corpus.root, "export/2024")
    from_s3 = ingest(
        lab, store_url, f"s3://{s3_bucket}/export/2024", endpoint_url=s3_endpoint, project="s3"
    )
    from_folder = ingest(lab, store_url, corpus.root, project="local")
    assert summary_counts(from_s3) == summary_counts(from_folder)
    assert summary_counts(from_s3) == {"stored": corpus.instances, "error": 2, "duplicate": 1}
    problems = {k: s for k, s, _r in report.problems(lab.db, from_s3["id"])}
    assert problems == corpus.hazard_keys
    by_project: dict[int | None, set[str]] = {}
    for file in current_files(lab):
        by_project.setdefault(file.project_id, set()).add(file.sha256)
    first, second = by_project.values()
    assert first == second  # deterministic zips: the same bytes from either source


def test_deid_leaves_no_phi_in_stored_bytes(lab: Catalog, store_url: str, tmp_path: Path) -> None:
    corpus = hazard_corpus(tmp_path / "src")
    profile_path = tmp_path / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(PROFILE))
    profile = load_profile(profile_path)
    summary = ingest(
        lab, store_url, corpus.root, deid_profile=PROFILE, deid_name="strict-phi", verify=True
    )
    assert summary["state"] == "done"
    assert summary["verify"]["checked"] == len(corpus.specs) and summary["verify"]["failed"] == []
    files = current_files(lab)
    assert files
    for file in files:
        data = blob(lab, file.sha256)  # stored zips are uncompressed: PHI would show verbatim
        assert PHI_NAME.encode() not in data and b"Subject0" not in data
        assert b"Gearbroker Research Imaging Center" not in data and b"GEARBROKER TEST" not in data
        assert check_blob(data, profile) == []
        assert file.info["deid"] == {"profile": "strict-phi", "sha256": profile.sha256}
        header = file.info["header"]["dicom"]
        assert header["PatientName"] == "ANONYMOUS" and "PatientBirthDate" not in header
        assert header["StudyDate"].startswith("2024") or header["StudyDate"].startswith("2023")
    log = dict(report.deid_log(lab.db, summary["id"]))
    changes = log["P0001/private_phi.dcm"]
    assert "PatientName: replace-with" in changes and "private tags: removed 2" in changes
    raw = dcmread(corpus.root / "P0001" / "private_phi.dcm")
    assert PHI_NAME in str(raw.PatientName)


def test_verify_fails_when_phi_survives(
    lab: Catalog, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = hazard_corpus(tmp_path / "src", sessions=1, series=1)
    plain = ingest(lab, store_url, corpus.root, project="plain")
    profile = load_profile(_write(tmp_path / "p.yaml", PROFILE))
    problems = [check_blob(blob(lab, f.sha256), profile) for f in current_files(lab)]
    assert all(any("PatientName not replaced" in p for p in found) for found in problems)
    assert any(any("private tags present" in p for p in found) for found in problems)
    assert plain["state"] == "done"

    def broken(ds: Any, _profile: Any) -> list[str]:  # a de-id that silently does nothing
        return []

    monkeypatch.setattr(tasks, "deidentify", broken)
    with pytest.raises(DeidVerifyError, match="still hold PHI"):
        ingest(lab, store_url, corpus.root, deid_profile=PROFILE, verify=True, project="broken")
    runs = [r for r in list_runs(lab.db) if r.options["project"] == "broken"]
    assert runs[0].state == "failed" and runs[0].stats["verify"]["failed"]


def _write(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path
