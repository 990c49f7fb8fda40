"""The blob store contract, run against a local directory and a real (moto) S3 server."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
import tracemalloc
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from catalog.blobstore import (
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    open_blobstore,
)
from catalog.errors import ConfigError, InvalidInputError, NotFoundError, StoreError

MIB = 1024 * 1024


@dataclass
class Case:
    """A store under test plus what a test needs to inspect it from outside."""

    url: str
    options: dict[str, Any]
    store: BlobStore
    s3_client: Any = None
    prefix: str = ""

    def leftovers(self) -> int:
        """Abandoned upload state: temp files, or temp objects plus incomplete multipart uploads."""
        if isinstance(self.store, LocalBlobStore):
            return len(os.listdir(self.store.root / "tmp"))
        assert isinstance(self.store, S3BlobStore)
        bucket = self.store.bucket
        objs = self.s3_client.list_objects_v2(Bucket=bucket, Prefix=self.prefix + "tmp/")
        uploads = self.s3_client.list_multipart_uploads(Bucket=bucket, Prefix=self.prefix)
        return int(objs.get("KeyCount", 0)) + len(uploads.get("Uploads", []))

    def stalled_with_evidence(self) -> bool:
        """Leftovers exist, and an S3 multipart upload has a part whose time gc can judge.

        moto reports the same fixed ``Initiated`` date (2010-11-10) for every multipart upload,
        so until a part has landed it looks ancient; real S3 reports the true time."""
        if self.leftovers() == 0:
            return False
        if isinstance(self.store, LocalBlobStore):
            return True
        bucket = self.store.bucket  # type: ignore[union-attr]
        uploads = self.s3_client.list_multipart_uploads(Bucket=bucket, Prefix=self.prefix)
        for upload in uploads.get("Uploads", []):
            parts = self.s3_client.list_parts(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
            if not parts.get("Parts"):
                return False
        return True


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    if request.param == "file":
        url = (tmp_path / "blobs").as_uri()
        return Case(url, {}, open_blobstore(url))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    client = request.getfixturevalue("s3_client")
    url = f"s3://{bucket}/pre/fix"
    options = {"endpoint_url": endpoint, "multipart_chunksize": 5 * MIB}
    return Case(url, options, open_blobstore(url, **options), client, "pre/fix/")


@pytest.fixture
def store(case: Case) -> BlobStore:
    return case.store


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PatternStream:
    """A lazily generated stream of ``total`` pseudo-random bytes; optionally fails midway."""

    def __init__(self, total: int, fail_after: int | None = None) -> None:
        self.total = total
        self.fail_after = fail_after
        self.sent = 0
        self._block = hashlib.sha512(b"seed").digest() * 1024  # 64 KiB

    def read(self, size: int = -1) -> bytes:
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise OSError("connection reset by peer")
        size = len(self._block) if size < 0 else min(size, len(self._block))
        size = min(size, self.total - self.sent)
        start = self.sent % 997
        chunk = (self._block[start:] + self._block[:start])[:size]
        self.sent += len(chunk)
        return chunk

    @staticmethod
    def digest(total: int) -> str:
        stream, h = PatternStream(total), hashlib.sha256()
        while chunk := stream.read(MIB):
            h.update(chunk)
        return h.hexdigest()


def read_all(store: BlobStore, digest: str) -> bytes:
    with store.open(digest) as f:
        return f.read()


def test_put_bytes_open_round_trip(store: BlobStore) -> None:
    data = b"hello blob store\n" * 1000
    info = store.put_bytes(data)
    assert info == BlobInfo(sha(data), len(data))
    assert store.exists(info.sha256)
    assert store.size(info.sha256) == len(data)
    assert read_all(store, info.sha256) == data
    assert [s for s, _ in store.iter_blobs()] == [info.sha256]


def test_put_file_and_stream_hash_correctly(store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "input.dcm"
    src.write_bytes(os.urandom(300_000))
    data = src.read_bytes()
    assert store.put_file(src) == BlobInfo(sha(data), len(data))
    other = os.urandom(70_000)
    assert store.put_stream(io.BytesIO(other)) == BlobInfo(sha(other), len(other))
    assert read_all(store, sha(data)) == data
    assert read_all(store, sha(other)) == other


def test_empty_blob(store: BlobStore) -> None:
    info = store.put_bytes(b"")
    assert info == BlobInfo(sha(b""), 0)
    assert read_all(store, info.sha256) == b""


def test_dedup_across_put_methods(case: Case, tmp_path: Path) -> None:
    store = case.store
    data = os.urandom(50_000)
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    infos = {
        store.put_bytes(data),
        store.put_file(src),
        store.put_stream(io.BytesIO(data)),
        store.put_stream(io.BytesIO(data)),
    }
    assert infos == {BlobInfo(sha(data), len(data))}
    assert len(list(store.iter_blobs())) == 1
    assert case.leftovers() == 0


def test_dedup_refreshes_last_modified(case: Case) -> None:
    store = case.store
    data = b"old content, re-put by an ingest that has not committed yet"
    digest = store.put_bytes(data).sha256
    if isinstance(store, LocalBlobStore):
        path = store.local_path(digest)
        assert path is not None
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    else:
        assert isinstance(store, S3BlobStore)
        store.refresh_after = 0.0
    before = dict(store.iter_blobs())[digest]
    time.sleep(1.1)
    store.put_bytes(data)
    assert dict(store.iter_blobs())[digest] > before
    assert store.gc(referenced=set(), grace_seconds=600).deleted == 0
    assert store.exists(digest)


def test_large_stream_constant_memory(store: BlobStore) -> None:
    # Local copies 1 MiB at a time.  S3 buffers at most a few 5 MiB parts (two queued,
    # one being read, one being joined), so its stream is made larger than that bound.
    local = isinstance(store, LocalBlobStore)
    total, bound = (24 * MIB, 4 * MIB) if local else (48 * MIB, 32 * MIB)
    store.put_stream(io.BytesIO(b"warm up: loads the S3 client's service model"))
    tracemalloc.start()
    try:
        info = store.put_stream(PatternStream(total))  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info == BlobInfo(PatternStream.digest(total), total)
    assert peak < bound
    h = hashlib.sha256()
    with store.open(info.sha256) as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    assert h.hexdigest() == info.sha256


def test_put_file_large_multipart(store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "big.nii"
    with src.open("wb") as out:
        stream = PatternStream(12 * MIB + 17)
        while chunk := stream.read(MIB):
            out.write(chunk)
    info = store.put_file(src)
    assert info == BlobInfo(PatternStream.digest(12 * MIB + 17), 12 * MIB + 17)
    assert store.size(info.sha256) == info.size


def test_local_layout_and_read_only(tmp_path: Path) -> None:
    store = open_blobstore(str(tmp_path / "root"))
    digest = store.put_bytes(b"abc").sha256
    path = tmp_path / "root" / "sha256" / digest[:2] / digest[2:4] / digest
    assert store.local_path(digest) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert os.listdir(tmp_path / "root" / "tmp") == []


@pytest.mark.s3
def test_s3_layout(s3_endpoint: str, s3_bucket: str, s3_client: Any) -> None:
    store = open_blobstore(f"s3://{s3_bucket}/a/b/", endpoint_url=s3_endpoint)
    digest = store.put_stream(io.BytesIO(b"abc")).sha256
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == [f"a/b/sha256/{digest[:2]}/{digest[2:4]}/{digest}"]
    assert store.local_path(digest) is None


def test_fetch_to_link_and_copy(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    digest = store.put_bytes(data).sha256
    linked = tmp_path / "job1" / "input" / "scan.dcm"
    store.fetch_to(digest, linked, link=True)
    copied = tmp_path / "job2" / "scan.dcm"
    store.fetch_to(digest, copied, link=False)
    assert linked.read_bytes() == copied.read_bytes() == data
    blob_path = store.local_path(digest)
    if blob_path is None:
        assert linked.stat().st_nlink == 1
    else:
        assert linked.stat().st_ino == blob_path.stat().st_ino
        assert stat.S_IMODE(linked.stat().st_mode) == 0o444
        assert copied.stat().st_ino != blob_path.stat().st_ino
    copied.write_bytes(b"scribble")
    assert read_all(store, digest) == data
    store.fetch_to(digest, copied)  # replaces an existing file
    assert copied.read_bytes() == data
    assert sorted(p.name for p in copied.parent.iterdir()) == ["scan.dcm"]


def test_fetch_to_falls_back_to_copy_across_filesystems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_blobstore(str(tmp_path / "blobs"))
    digest = store.put_bytes(b"x" * 4096).sha256

    def cross_device(src: Any, dst: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    dest = tmp_path / "job" / "x.bin"
    store.fetch_to(digest, dest, link=True)
    assert dest.read_bytes() == b"x" * 4096
    path = store.local_path(digest)
    assert path is not None and dest.stat().st_ino != path.stat().st_ino


def test_missing_blob(store: BlobStore, tmp_path: Path) -> None:
    digest = sha(b"never stored")
    assert not store.exists(digest)
    with pytest.raises(BlobNotFoundError):
        store.open(digest)
    with pytest.raises(NotFoundError):
        store.size(digest)
    with pytest.raises(StoreError):
        store.fetch_to(digest, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    store.delete(digest)


def test_delete(store: BlobStore) -> None:
    keep, drop = store.put_bytes(b"keep"), store.put_bytes(b"drop")
    store.delete(drop.sha256)
    assert not store.exists(drop.sha256)
    assert [s for s, _ in store.iter_blobs()] == [keep.sha256]


@pytest.mark.parametrize(
    "bad",
    ["../../../../etc/passwd", "A" * 64, "a" * 63, "a" * 65, "g" * 64, "", "ab/" + "c" * 61],
)
def test_invalid_sha_rejected(store: BlobStore, bad: str, tmp_path: Path) -> None:
    for call in (
        lambda: store.open(bad),
        lambda: store.exists(bad),
        lambda: store.size(bad),
        lambda: store.local_path(bad),
        lambda: store.delete(bad),
        lambda: store.fetch_to(bad, tmp_path / "x"),
    ):
        with pytest.raises(InvalidInputError):
            call()


def test_gc_grace_and_references(store: BlobStore) -> None:
    old_ref = store.put_bytes(b"referenced by a file row")
    old_orphan = store.put_bytes(b"orphan from a deleted file" * 10)
    time.sleep(2.2)
    fresh = store.put_bytes(b"just uploaded, DB commit pending")
    report = store.gc(referenced={old_ref.sha256}, grace_seconds=1.5)
    assert (report.scanned, report.deleted, report.kept_referenced, report.kept_recent) == (
        3,
        1,
        1,
        1,
    )
    assert report.bytes_freed == old_orphan.size
    assert not store.exists(old_orphan.sha256)
    assert store.exists(old_ref.sha256) and store.exists(fresh.sha256)
    # A predicate works too; grace 0 makes everything old enough.
    report = store.gc(referenced=lambda s: s == fresh.sha256, grace_seconds=0)
    assert (report.deleted, report.kept_referenced) == (1, 1)
    assert [s for s, _ in store.iter_blobs()] == [fresh.sha256]


def test_interrupted_stream_leaves_no_blob(case: Case) -> None:
    store = case.store
    with pytest.raises(StoreError, match="connection reset"):
        store.put_stream(PatternStream(12 * MIB, fail_after=7 * MIB))  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        store.put_stream(PatternStream(100_000, fail_after=50_000))  # type: ignore[arg-type]
    assert list(store.iter_blobs()) == []
    assert case.leftovers() == 0


def test_batch_puts_appear_together_at_its_end(case: Case) -> None:
    store = case.store
    kept = store.put_bytes(b"stored before")
    with store.batch() as batch:
        first = batch.put_bytes(b"first of the batch")
        again = batch.put_bytes(b"stored before")  # already stored: nothing to sync
        second = batch.put_stream(io.BytesIO(b"second of the batch"))  # type: ignore[arg-type]
        if store.scheme == "file":  # the local store defers the syncs and renames
            assert not store.exists(first.sha256) and not store.exists(second.sha256)
    assert again == kept
    for info, data in ((first, b"first of the batch"), (second, b"second of the batch")):
        assert read_all(store, info.sha256) == data
    assert case.leftovers() == 0


def test_batch_put_built_stores_what_the_writer_wrote(case: Case) -> None:
    store = case.store
    member = bytes(range(256)) * 1000

    def write_zip(out: BinaryIO) -> None:  # zipfile seeks back to fill in each header
        # Fixed member times: a bare name takes the current time, so two calls straddling
        # a two-second boundary wrote different bytes (the test failed now and then).
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            for name, data in (("a.dcm", member), ("b.dcm", member[::-1])):
                archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)

    with store.batch() as batch:
        built = batch.put_built(write_zip)
        empty = batch.put_built(lambda out: None)
        again = batch.put_built(write_zip)  # the same bytes: the same blob
    data = read_all(store, built.sha256)
    assert built == again and built.size == len(data)
    assert hashlib.sha256(data).hexdigest() == built.sha256
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("a.dcm") == member and archive.read("b.dcm") == member[::-1]
    assert empty.size == 0 and read_all(store, empty.sha256) == b""
    assert case.leftovers() == 0


def test_batch_failing_inside_leaves_no_blob(case: Case) -> None:
    store = case.store
    with pytest.raises(RuntimeError, match="shard failed"), store.batch() as batch:
        done = batch.put_bytes(b"written before the failure")
        raise RuntimeError("shard failed")
    if store.scheme == "file":
        assert not store.exists(done.sha256)
    assert case.leftovers() == 0


_KILLED_UPLOAD = """
import json, sys, time
from pathlib import Path
from catalog.blobstore import open_blobstore

url, options, marker = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])

class Stalls:
    sent = 0
    def read(self, size=-1):
        if self.sent >= 9 * 1024 * 1024:
            marker.touch()
            time.sleep(600)
        size = min(1024 * 1024 if size < 0 else size, 1024 * 1024)
        self.sent += size
        return b"z" * size

open_blobstore(url, **options).put_stream(Stalls())
"""


def test_killed_upload_leaves_only_temps_that_gc_removes(case: Case, tmp_path: Path) -> None:
    marker = tmp_path / "stalled"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_UPLOAD, case.url, json.dumps(case.options), str(marker)]
    )
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and case.stalled_with_evidence()):
            assert proc.poll() is None, "uploader exited early"
            assert time.monotonic() < deadline, "upload never stalled"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = case.store
    assert list(store.iter_blobs()) == []
    assert store.gc(referenced=set(), grace_seconds=3600).stale_temps_deleted == 0
    assert case.leftovers() > 0
    report = store.gc(referenced=set(), grace_seconds=0)
    assert report.stale_temps_deleted >= 1
    assert report.deleted == 0
    assert case.leftovers() == 0


def test_many_small_put_files(store: BlobStore, tmp_path: Path) -> None:
    digests = set()
    for i in range(80):
        src = tmp_path / f"f{i}.dcm"
        src.write_bytes(i.to_bytes(4, "big") * (i + 1))
        digests.add(store.put_file(src).sha256)
    digests.add(store.put_file(tmp_path / "f7.dcm").sha256)
    assert {s for s, _ in store.iter_blobs()} == digests
    assert len(digests) == 80


def test_iter_blobs_ignores_foreign_entries(case: Case) -> None:
    store = case.store
    digest = store.put_bytes(b"real").sha256
    if isinstance(store, LocalBlobStore):
        (store.root / "sha256" / "zz").mkdir()
        (store.root / "sha256" / digest[:2] / digest[2:4] / "README").write_text("x")
    else:
        assert isinstance(store, S3BlobStore)
        for key in ("sha256/README", f"sha256/00/00/{digest}", "other/file"):
            case.s3_client.put_object(Bucket=store.bucket, Key=case.prefix + key, Body=b"x")
    assert [s for s, _ in store.iter_blobs()] == [digest]
    assert store.gc(referenced=set(), grace_seconds=0).scanned == 1


def test_store_pickles(store: BlobStore) -> None:
    digest = store.put_bytes(b"shipped to a dask worker").sha256
    clone = pickle.loads(pickle.dumps(store))
    assert read_all(clone, digest) == b"shipped to a dask worker"


def test_open_blobstore_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = open_blobstore("rel/store")
    assert isinstance(local, LocalBlobStore) and local.root == tmp_path / "rel" / "store"
    from_uri = open_blobstore((tmp_path / "a b").as_uri())
    assert isinstance(from_uri, LocalBlobStore) and from_uri.root == tmp_path / "a b"
    s3 = open_blobstore("s3://bucket/some/prefix/", endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3, S3BlobStore)
    assert (s3.bucket, s3.prefix, s3.scheme) == ("bucket", "some/prefix/", "s3")
    bare = open_blobstore("s3://bucket")
    assert isinstance(bare, S3BlobStore) and bare.prefix == ""
    for url, options in (
        ("gs://bucket/x", {}),
        ("file://host/dir", {}),
        ("s3:///prefix", {}),
        (str(tmp_path), {"endpoint_url": "http://x"}),
        ("s3://bucket", {"endpont_url": "http://x"}),
    ):
        with pytest.raises(ConfigError):
            open_blobstore(url, **options)


def test_unreachable_s3_raises_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    store = open_blobstore("s3://bucket", endpoint_url="http://127.0.0.1:9", region="us-east-1")
    with pytest.raises(StoreError, match="Could not connect"):
        store.put_bytes(b"x")
