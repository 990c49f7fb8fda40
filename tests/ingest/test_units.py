"""Sources, templates, header mapping, de-id profiles and progress lines, without a cluster."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from catalog.errors import ConfigError, NotFoundError
from ingest import tasks
from ingest.deid import (
    DeidProfileError,
    check_dataset,
    deidentify,
    hash_uid,
    parse_profile,
    shift_date,
)
from ingest.dicom import DicomFileError, MappingOptions, header_fields, map_header, read_header
from ingest.progress import progress_line
from ingest.sources import (
    AzureBlobSource,
    GCSSource,
    KeyFilter,
    LocalFolderSource,
    SourceError,
    globs,
    open_source,
)
from ingest.sources import base as source_base
from ingest.sources import local as source_local
from ingest.sources.base import Source, SourceObject
from ingest.synthetic import SeriesSpec, make_slice, uid_for
from ingest.templates import TemplateError, compile_template, load_template


def _slice_bytes(**changes: object) -> bytes:
    spec = SeriesSpec("P1", "Doe^John", uid_for("st"), uid_for("se"), 7, "T1w_MPRAGE", slices=2)
    ds = make_slice(spec, 0)
    for key, value in changes.items():
        setattr(ds, key, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_local_listing_is_in_key_order_and_resumes_after_any_key(tmp_path: Path) -> None:
    for rel in ["b0.dcm", "b/c.dcm", "b/a/x.dcm", "a.dcm", "b-1.dcm", "c/d/e.dcm"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    source = LocalFolderSource(tmp_path)
    keys = [obj.key for obj in source.iter_objects()]
    assert keys == sorted(keys) and len(keys) == 6
    for after in keys:
        assert [o.key for o in source.iter_objects(after)] == [k for k in keys if k > after]
    assert source.read_range("b/c.dcm", 2, 3) == b"c.d"
    with pytest.raises(NotFoundError):
        LocalFolderSource(tmp_path / "missing")
    with pytest.raises(ConfigError, match="unsupported source URL scheme"):
        open_source("ftp://host/x")
    with pytest.raises(ConfigError, match="no bucket"):
        open_source("gs:///x")
    with pytest.raises(ConfigError, match="s3:// sources only"):
        open_source("az://container/x", profile="research")
    gcs = open_source("gs://bucket/a%20b/", endpoint_url="http://127.0.0.1:9")
    assert isinstance(gcs, GCSSource) and (gcs.prefix, gcs.url) == ("a b/", "gs://bucket/a b/")
    azure = open_source("az://container")
    assert isinstance(azure, AzureBlobSource) and azure.url == "az://container/"


def test_local_source_refuses_keys_and_links_that_leave_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "a" / "x.dcm").write_bytes(b"inside")
    (outside / "secret").write_bytes(b"secret")
    (root / "a" / "out.dcm").symlink_to(outside / "secret")
    (root / "a" / "in.dcm").symlink_to(root / "a" / "x.dcm")
    (root / "linked").symlink_to(outside)
    (root / "inner").symlink_to(root / "a")
    monkeypatch.setattr(source_local, "FOLDER_CACHE", 2)  # the cache is cleared as it fills
    source = pickle.loads(pickle.dumps(LocalFolderSource(root)))
    for _ in range(2):  # cold, then from the cache
        assert source.read("a/x.dcm") == source.read("a/in.dcm") == b"inside"
        assert source.read("inner/x.dcm") == b"inside"
        for key in ["../outside/secret", "a/../../outside/secret", "/etc/passwd",
                    "a/out.dcm", "linked/secret"]:  # fmt: skip
            with pytest.raises(SourceError, match="leaves the source folder"):
                source.read(key)
        for key in ["a/..", "a/", ".."]:
            with pytest.raises(SourceError, match="does not name a file"):
                source.read(key)
    with pytest.raises(SourceError, match="cannot read"):
        source.read("a/missing.dcm")
    assert source._folders  # filled, but it does not travel with the source
    assert pickle.loads(pickle.dumps(source))._folders == {}


class _MemorySource(Source):
    """Objects in a dict; records the order its reads start in."""

    url = "memory://"

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.started: list[str] = []

    def iter_objects(self, start_after: str | None = None) -> Iterator[SourceObject]:
        for key in sorted(self.objects):
            if start_after is None or key > start_after:
                yield SourceObject(key, len(self.objects[key]), "etag")

    def read(self, key: str) -> bytes:
        self.started.append(key)
        if key not in self.objects:
            raise SourceError(f"cannot read {key}: missing")
        return self.objects[key]

    def read_range(self, key: str, start: int, length: int) -> bytes:
        return self.read(key)[start : start + length]


def _numbered(count: int) -> dict[str, bytes]:
    return {f"f{n:02d}": bytes([n]) * 1000 for n in range(count)}


def _check_read_ahead(reads: Iterator[tuple[str, bytes | SourceError]],
                      objects: list[tuple[str, int]], ahead: Callable[[], int]) -> None:  # fmt: skip
    first = next(reads)
    assert first == ("f00", bytes([0]) * 1000)
    assert ahead() <= 4  # the one yielded and three ahead
    rest = list(reads)
    assert [key for key, _ in rest] == [key for key, _ in objects[1:]]
    missing = dict(rest)["missing"]
    assert isinstance(missing, SourceError) and "missing" in str(missing)
    assert all(data == bytes([int(k[1:])]) * 1000 for k, data in rest if k.startswith("f"))


@pytest.mark.parametrize("batch_bytes", [1000, 2000, 1 << 20])
def test_read_ahead_yields_in_order_with_errors_in_place_and_bounded_reads(
    monkeypatch: pytest.MonkeyPatch, batch_bytes: int
) -> None:
    source = _MemorySource(_numbered(12))
    monkeypatch.setattr(source_base, "READ_AHEAD_BYTES", 3000)  # three objects ahead at most
    monkeypatch.setattr(source_base, "READ_BATCH_BYTES", batch_bytes)  # objects per thread
    objects = [(f"f{n:02d}", 1000) for n in range(12)]
    objects.insert(5, ("missing", 1000))
    _check_read_ahead(source.read_ahead(objects), objects, lambda: len(source.started))


def test_local_read_ahead_reads_in_order_and_advises_the_kernel_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, data in _numbered(12).items():
        (tmp_path / key).write_bytes(data)
    (tmp_path / "escape").symlink_to("/etc/hostname")
    source = LocalFolderSource(tmp_path)
    advised: list[int] = []
    real_fadvise = os.posix_fadvise

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_WILLNEED
        advised.append(fd)
        real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    monkeypatch.setattr(source_base, "READ_AHEAD_BYTES", 3000)
    objects = [(f"f{n:02d}", 1000) for n in range(12)]
    objects.insert(5, ("missing", 1000))
    objects.insert(7, ("escape", 1000))
    reads = source.read_ahead(objects)
    _check_read_ahead(reads, objects, lambda: len(advised))
    assert len(advised) == 12  # every file it could open; not "missing", nor the escape
    outcome = dict(source.read_ahead([("escape", 10)]))["escape"]
    assert isinstance(outcome, SourceError) and "leaves the source folder" in str(outcome)


def test_scan_pack_shard_zips_each_series_once_and_refuses_a_file_that_changed(
    tmp_path: Path,
) -> None:
    source_dir = tmp_path / "src"
    source_dir.mkdir()
    slices = {
        f"s{n}.dcm": _slice_bytes(InstanceNumber=n, SOPInstanceUID=uid_for(f"sop{n}"))
        for n in (1, 2, 3)
    }
    slices["copy.dcm"] = slices["s1.dcm"]  # the same SOP instance again
    slices["grew.dcm"] = slices.pop("s3.dcm")
    for name, data in slices.items():
        (source_dir / name).write_bytes(data)
    spec = tasks.WorkSpec(LocalFolderSource(source_dir), str(tmp_path / "store"))
    objects = [[name, len(data), "etag"] for name, data in sorted(slices.items())]
    objects[[o[0] for o in objects].index("grew.dcm")][1] -= 10  # listed before it grew
    records = {r["key"]: r for r in tasks.scan_pack_shard(spec, objects)}
    assert records["grew.dcm"]["status"] == "error"
    assert "size changed since listing" in records["grew.dcm"]["detail"]["error"]
    packed = [records[k] for k in ("copy.dcm", "s2.dcm")]  # "copy.dcm" sorts before "s1.dcm"
    assert {r["status"] for r in packed} == {"scanned"}
    assert packed[0]["sha256"] == packed[1]["sha256"]  # one fragment for the series
    assert records["s1.dcm"]["status"] == "duplicate"
    assert records["s1.dcm"]["detail"] == {"error": "same instance as copy.dcm"}
    with spec.store().open(packed[0]["sha256"]) as fh, zipfile.ZipFile(fh) as archive:
        names = archive.namelist()
        assert [archive.read(n) for n in names] == [slices["copy.dcm"], slices["s2.dcm"]]
    assert names == [records["copy.dcm"]["name"], records["s2.dcm"]["name"]]


def test_key_filter_globs() -> None:
    keys = KeyFilter(include=globs(["*.dcm,*.IMA"]), exclude=("tmp/*",))
    assert keys.accepts("a/b/x.dcm") and keys.accepts("y.IMA")
    assert not keys.accepts("tmp/x.dcm") and not keys.accepts("notes.txt")


def test_templates_place_paths() -> None:
    template = compile_template("sub-{subject}/ses-{session}/{acquisition}/*.nii*")
    place = template.place("sub-01/ses-pre/anat/t1.nii.gz", {})
    assert place is not None
    assert (place.subject, place.session, place.acquisition, place.name) == (
        "01", "pre", "anat", "t1.nii.gz",
    )  # fmt: skip
    assert template.place("sub-01/anat/t1.nii", {}) is None
    assert template.place("x-01/ses-pre/anat/t1.nii", {}) is None
    override = template.place("sub-01/ses-pre/anat/t1.nii", {"subject": "S9"})
    assert override is not None and override.subject == "S9"
    assert compile_template("{subject}/{_site}/*").place("a/b/c", {}).session is None  # type: ignore[union-attr]
    for bad in ("{subject}/{subject}/*", "{patient}/*", "{subject}", "a//b"):
        with pytest.raises(TemplateError):
            compile_template(bad)


def test_yaml_template(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("- pattern: 'sub-{subject}'\n- pattern: '{session}'\n")
    assert load_template(str(path)).text == "sub-{subject}/{session}/*"


def test_headers_map_to_labels_and_hazards() -> None:
    ds, offset = read_header(_slice_bytes())
    assert offset is not None
    fields = header_fields(ds)
    assert fields["SeriesNumber"] == 7 and fields["Rows"] == 64
    assert fields["ImageType"] == ["ORIGINAL", "PRIMARY", "M", "ND"]
    target = map_header(fields, MappingOptions(subject_map={"P1": "sub-01"}), "x/y.dcm")
    assert (target.subject, target.session, target.acquisition) == (
        "sub-01", "2024-03-14 Research MRI", "7 - T1w_MPRAGE",
    )  # fmt: skip
    assert target.group_key == f"{uid_for('se')}|{uid_for('st')}"
    assert target.detail["classification"]["Measurement"] == ["T1"]
    assert target.name == f"{fields['SOPInstanceUID']}.dcm"
    fields.pop("SeriesInstanceUID")
    loose = map_header(fields, MappingOptions(), "k")
    assert loose.detail["hazards"] == ["missing SeriesInstanceUID"]
    assert loose.group_key.startswith("no-series-uid-")
    with pytest.raises(DicomFileError, match="strict"):
        map_header(fields, MappingOptions(strict_uid=True), "k")


def test_truncated_and_foreign_files_are_refused() -> None:
    data = _slice_bytes()
    with pytest.raises(DicomFileError, match="truncated"):
        read_header(data[:-10])
    with pytest.raises(DicomFileError, match="truncated"):
        read_header(data[:600])
    with pytest.raises(DicomFileError, match="not a DICOM"):
        read_header(b"hello" * 100)
    _ds, offset = read_header(data[:600], size=len(data))  # a head: the caller reads more
    assert offset is None


def test_deid_profile_actions_and_check() -> None:
    profile = parse_profile(
        {"name": "t", "dicom": {"salt": "s", "date-increment": 10, "recurse-sequence": True,
         "fields": [{"name": "PatientName", "replace-with": "X"}, {"name": "0x00100030", "remove": True},
                    {"name": "StudyDate", "increment-date": True}, {"name": "PatientID", "hash": True},
                    {"name": "SOPInstanceUID", "hashuid": True}]}}
    )  # fmt: skip
    ds = dcmread(io.BytesIO(_slice_bytes()))
    assert check_dataset(ds, profile)  # the original fails the check
    original_uid = ds.SOPInstanceUID
    log = deidentify(ds, profile)
    assert "PatientName: replace-with" in log and "PatientBirthDate" not in ds
    assert ds.StudyDate == "20240324" and len(ds.PatientID) == 16
    assert (
        ds.SOPInstanceUID == hash_uid(original_uid, "s") == ds.file_meta.MediaStorageSOPInstanceUID
    )
    assert check_dataset(ds, profile) == []
    assert shift_date("20240229", 1) == "20240301" and shift_date("junk", 1) is None
    for bad in ({}, {"dicom": {"fields": [{"name": "PatientName", "remove": 1}]}},
                {"dicom": {"fields": [{"name": "NoSuchKeyword", "remove": True}]}},
                {"dicom": {"unknown": 1}}):  # fmt: skip
        with pytest.raises(DeidProfileError):
            parse_profile(bad)


def test_progress_line() -> None:
    stats = {"phase": "scan", "done": 500, "listed": 1000, "listing_done": True,
             "done_bytes": 5e6, "started": 100.0, "errors": 2}  # fmt: skip
    assert progress_line(stats, now=110.0) == (
        "[scan] 500/1,000 files  5.0 MB  50 files/s  ETA 0:00:10  errors 2"
    )
    # A packed scan: files stored in series fragments are its progress.
    packing = {**stats, "done": 10, "done_bytes": 1e5, "awaiting_pack": 490,
               "awaiting_pack_bytes": 4.9e6, "scanned": 500}  # fmt: skip
    assert progress_line(packing, now=110.0) == progress_line(stats, now=110.0)
    packing.update(phase="pack", done=700, done_bytes=7e6, scanned=1000)
    assert progress_line(packing, now=110.0) == (
        "[pack] 700/1,000 files  scanned 1,000  7.0 MB  70 files/s  ETA 0:00:04  errors 2"
    )
