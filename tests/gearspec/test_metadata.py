"""Gear output metadata: validation, change set, job scope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gearspec.errors import MetadataError
from gearspec.metadata import ChangeSet, JobScope, load_metadata, parse_metadata

SCOPE = JobScope(
    containers={"acquisition": "acq1", "session": "s1", "subject": "sub1", "project": "p1"},
    destination_level="acquisition",
    output_files=frozenset({"out.nii.gz", "report.pdf"}),
    input_files={"acquisition": frozenset({"scan.dcm.zip"})},
)


def test_full_change_set() -> None:
    doc = {
        "acquisition": {
            "label": "T1w",
            "info": {"qa": "pass"},
            "tags": ["done"],
            "files": [
                {
                    "name": "out.nii.gz",
                    "type": "nifti",
                    "modality": "MR",
                    "classification": {"Intent": ["Structural"], "Measurement": ["T1"]},
                    "info": {"dim": 3},
                    "tags": ["converted"],
                },
                {"name": "scan.dcm.zip", "metadata": {"legacy": True}, "instrument": "mri"},
            ],
        },
        "session": {"operator": "RS", "age": 31.5},
        "subject": {"code": "S01", "sex": "female"},
        "project": {"info": {"count": 1}},
    }
    changes = parse_metadata(doc, SCOPE)
    acq = changes.for_level("acquisition")
    assert acq is not None
    assert acq.container_id == "acq1"
    assert acq.fields == {"label": "T1w"}
    assert acq.info == {"qa": "pass"} and acq.tags == ("done",)
    out, scan = acq.files
    assert out.is_output and out.type == "nifti" and out.modality == "MR"
    assert out.classification == {"Intent": ("Structural",), "Measurement": ("T1",)}
    assert out.tags == ("converted",) and out.info == {"dim": 3}
    assert not scan.is_output and scan.info == {"legacy": True} and scan.tags is None
    session = changes.for_level("session")
    assert session is not None and session.fields == {"operator": "RS", "age": 31.5}
    assert session.info is None and session.tags is None and session.files == ()
    assert [u.level for u in changes.updates] == ["project", "subject", "session", "acquisition"]


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"analysis": {"info": {}}}, "$.analysis"),
        ({"group": {}}, "$.group"),
        ({"session": {"files": [{"name": "out.nii.gz"}]}}, "$.session.files[0].name"),
        ({"acquisition": {"files": [{"name": "../../etc/passwd"}]}}, "$.acquisition.files[0].name"),
        ({"acquisition": {"files": [{"name": "/abs.txt"}]}}, "$.acquisition.files[0].name"),
        ({"acquisition": {"files": [{"name": "nul\0.txt"}]}}, "$.acquisition.files[0].name"),
        ({"acquisition": {"files": [{"name": "other.txt"}]}}, "$.acquisition.files[0].name"),
        (
            {"acquisition": {"files": [{"name": "out.nii.gz"}, {"name": "out.nii.gz"}]}},
            "$.acquisition.files[1].name",
        ),
        ({"acquisition": {"files": [{"type": "nifti"}]}}, "$.acquisition.files[0].name"),
        (
            {"acquisition": {"files": [{"name": "out.nii.gz", "color": 1}]}},
            "$.acquisition.files[0].color",
        ),
        (
            {"acquisition": {"files": [{"name": "out.nii.gz", "tags": "x"}]}},
            "$.acquisition.files[0].tags",
        ),
        (
            {"acquisition": {"files": [{"name": "out.nii.gz", "info": {}, "metadata": {}}]}},
            "$.acquisition.files[0].metadata",
        ),
        ({"acquisition": {"info": []}}, "$.acquisition.info"),
        ({"session": {"code": "S1"}}, "$.session.code"),
        ([], "$"),
    ],
)
def test_bad_metadata_is_rejected_with_path(doc: Any, path: str) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_metadata(doc, SCOPE)
    assert path in {i.path for i in caught.value.issues}


def test_every_problem_reported_together() -> None:
    doc = {"analysis": {}, "acquisition": {"files": [{"name": "x.txt"}, {"name": "a/b"}]}}
    with pytest.raises(MetadataError) as caught:
        parse_metadata(doc, SCOPE)
    assert [i.path for i in caught.value.issues] == [
        "$.acquisition.files[0].name",
        "$.acquisition.files[1].name",
        "$.analysis",
    ]


def test_load_metadata(tmp_path: Path) -> None:
    assert load_metadata(tmp_path, SCOPE) == ChangeSet()
    assert ChangeSet().is_empty()
    (tmp_path / ".metadata.json").write_text('{"acquisition": {"label": "x"}}')
    changes = load_metadata(tmp_path, SCOPE)
    assert not changes.is_empty()
    (tmp_path / ".metadata.json").write_text("{broken")
    with pytest.raises(MetadataError, match="cannot read JSON"):
        load_metadata(tmp_path, SCOPE)
