"""The catalog API on SQLite and PostgreSQL: hierarchy, files, metadata, permissions, audit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from catalog.catalog import Catalog
from catalog.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PathError,
    PermissionDeniedError,
)
from catalog.gc import collect_garbage
from catalog.models import AuditEvent, Container, File

OpenAs = Callable[[str], Catalog]


@pytest.fixture
def project(catalog: Catalog) -> Catalog:
    catalog.create_group("lab")
    catalog.create_project("lab", "study")
    return catalog


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_upload_creates_missing_containers_and_versions(project: Catalog, tmp_path: Path) -> None:
    f = _write(tmp_path / "t1.nii.gz", b"one")
    [r] = project.upload([f], "lab/study/sub-01/ses-01/anat")
    assert (r.status, r.version) == ("new", 1)
    assert r.path == "lab/study/sub-01/ses-01/anat/files/t1.nii.gz"
    row = project.get(r.path)
    assert isinstance(row, File)
    assert (row.type, row.size, row.current) == ("nifti", 3, True)
    [same] = project.upload([f], "lab/study/sub-01/ses-01/anat")
    assert same.status == "unchanged"
    f.write_bytes(b"two!")
    [v2] = project.upload([f], "lab/study/sub-01/ses-01/anat")
    assert (v2.status, v2.version) == ("version", 2)
    with project.db.session(readonly=True) as s:
        versions = s.scalars(select(File).where(File.name == "t1.nii.gz").order_by(File.version))
        assert [(v.version, v.current, v.size) for v in versions] == [(1, False, 3), (2, True, 4)]
    # the old version's blob is still there
    assert project.blobs.exists(r.sha256)


def test_directory_upload_maps_folders_to_levels(project: Catalog, tmp_path: Path) -> None:
    root = tmp_path / "export"
    _write(root / "sub-01" / "ses-1" / "func" / "bold.nii", b"b")
    _write(root / "sub-01" / "ses-1" / "notes.txt", b"session file")
    _write(root / "participants.tsv", b"project file")
    results = project.upload([root], "lab/study")
    assert sorted(r.path for r in results) == [
        "lab/study/files/participants.tsv",
        "lab/study/sub-01/ses-1/files/notes.txt",
        "lab/study/sub-01/ses-1/func/files/bold.nii",
    ]
    session = project.get("lab/study/sub-01/ses-1")
    assert isinstance(session, Container) and session.level == "session"
    with pytest.raises(InvalidInputError, match="hierarchy levels"):
        project.upload([root], "lab/study/sub-01/ses-1")


def test_labels_with_slashes_are_addressable(project: Catalog, tmp_path: Path) -> None:
    f = _write(tmp_path / "a.txt", b"x")
    project.upload([f], "lab/study/pat%2F7/ses%25")
    node = project.get("lab/study/pat%2F7/ses%25/files/a.txt")
    assert isinstance(node, File)
    subject = project.get("lab/study/pat%2F7")
    assert isinstance(subject, Container) and subject.label == "pat/7"
    assert project.get(f"<id:{subject.id}>").id == subject.id
    assert project.path_of(subject) == "lab/study/pat%2F7"


def test_bad_input_errors(project: Catalog, tmp_path: Path) -> None:
    f = _write(tmp_path / "a.txt", b"x")
    with pytest.raises(NotFoundError, match="no project"):
        project.upload([f], "lab/nope/sub")
    with pytest.raises(NotFoundError, match="no group"):
        project.create_project("nogroup", "p")
    with pytest.raises(ConflictError, match="already exists"):
        project.create_project("lab", "study")
    with pytest.raises(InvalidInputError):
        project.create_group("Bad Group")
    with pytest.raises(InvalidInputError):
        project.upload([f], "lab/study/ bad")
    with pytest.raises(PathError):
        project.upload([f], "lab")
    with pytest.raises(NotFoundError):
        project.upload([tmp_path / "missing"], "lab/study")
    # nothing was created by the failed calls
    assert [n.label for n in project.tree("lab/study")] == []


def test_info_and_tags(project: Catalog, tmp_path: Path) -> None:
    project.upload([_write(tmp_path / "a.dcm", b"x")], "lab/study/s1/e1/a1")
    info = project.info_set("lab/study/s1", {"age": 42, "scanner.site": "A", "odd": "$(rm -rf /)"})
    assert info == {"age": 42, "scanner": {"site": "A"}, "odd": "$(rm -rf /)"}
    assert project.info_get("lab/study/s1", "scanner.site") == "A"
    assert project.info_delete("lab/study/s1", ["scanner.site"]) == {
        "age": 42,
        "scanner": {},
        "odd": "$(rm -rf /)",
    }
    with pytest.raises(NotFoundError):
        project.info_get("lab/study/s1", "missing.key")
    path = "lab/study/s1/e1/a1/files/a.dcm"
    assert project.tags_add(path, ["qa", "t1", "qa"]) == ["qa", "t1"]
    assert project.tags_rm(path, ["qa"]) == ["t1"]
    project.info_set(path, {"PatientID": "P1"})
    got = project.get(path)
    assert got.info == {"PatientID": "P1"} and got.tags == ["t1"]


def test_permissions(project: Catalog, as_user: OpenAs, tmp_path: Path) -> None:
    f = _write(tmp_path / "a.txt", b"x")
    project.upload([f], "lab/study/s1")
    bob = as_user("bob")
    with pytest.raises(PermissionDeniedError):
        bob.get("lab/study/s1")
    assert bob.tree() == []
    project.add_permission("lab/study", "bob", "ro")
    assert [n.label for n in bob.tree()] == ["lab"]
    assert bob.info_get("lab/study/s1") == {}
    for write in (
        lambda: bob.upload([f], "lab/study/s2"),
        lambda: bob.info_set("lab/study/s1", {"a": 1}),
        lambda: bob.tags_add("lab/study/s1", ["x"]),
        lambda: bob.rm("lab/study/s1/files/a.txt"),
        lambda: bob.create_project("lab", "mine"),
        lambda: bob.create_group("bobs"),
        lambda: bob.add_permission("lab/study", "bob", "admin"),
    ):
        with pytest.raises(PermissionDeniedError):
            write()
    project.add_permission("lab/study", "bob", "rw")
    bob.upload([f], "lab/study/s2")
    with pytest.raises(PermissionDeniedError):
        bob.rm("lab/study", recursive=True)  # removing a project needs admin
    # a group role reaches every project in the group
    project.create_project("lab", "other")
    carol = as_user("carol")
    project.add_permission("lab", "carol", "ro")
    assert carol.get("lab/other").label == "other"


def test_mutations_and_downloads_are_audited(project: Catalog, tmp_path: Path) -> None:
    project.upload([_write(tmp_path / "a.txt", b"x")], "lab/study/s1")
    project.info_set("lab/study/s1", {"k": 1})
    project.tags_add("lab/study/s1", ["t"])
    project.download("lab/study/s1/files/a.txt", tmp_path / "out.txt")
    project.rm("lab/study/s1", recursive=True)
    with project.db.session(readonly=True) as s:
        actions = [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
        users = {e.username for e in s.scalars(select(AuditEvent))}
    assert actions == [
        "create",
        "create",
        "create",
        "upload",
        "info.set",
        "tag.add",
        "download",
        "delete",
    ]
    assert users == {"admin"}


def test_download_tree_and_refuse_overwrite(project: Catalog, tmp_path: Path) -> None:
    root = tmp_path / "in"
    _write(root / "s1" / "e1" / "a1" / "x.dcm", b"1")
    _write(root / "s1" / "e2" / "a1" / "y.dcm", b"2")
    project.upload([root], "lab/study")
    out = tmp_path / "out"
    written = project.download("lab/study/s1", out)
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "s1/e1/a1/x.dcm",
        "s1/e2/a1/y.dcm",
    ]
    assert (out / "s1/e2/a1/y.dcm").read_bytes() == b"2"
    with pytest.raises(ConflictError):
        project.download("lab/study/s1", out)
    project.download("lab/study/s1", out, overwrite=True)


def test_rm_requires_recursive_and_gc_frees_blobs(project: Catalog, tmp_path: Path) -> None:
    r = project.upload([_write(tmp_path / "a.txt", b"payload")], "lab/study/s1")[0]
    with pytest.raises(ConflictError, match="not empty"):
        project.rm("lab/study/s1")
    project.rm("lab/study/s1", recursive=True)
    with pytest.raises(NotFoundError):
        project.get("lab/study/s1")
    assert project.blobs.exists(r.sha256)
    assert collect_garbage(project, grace_seconds=3600).deleted == 0  # too young
    report = collect_garbage(project, grace_seconds=0)
    assert report.deleted == 1 and not project.blobs.exists(r.sha256)
