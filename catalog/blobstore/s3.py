"""The blob store in an S3 bucket (AWS or any S3-compatible server via ``endpoint_url``).

Layout: ``<prefix>sha256/ab/cd/<hex>`` for blobs, ``<prefix>tmp/<uuid>`` for
streamed uploads.  The design minimises transfers, the expensive part:

- ``put_file`` hashes the local file first (one local read), HEADs the final
  key and returns at once if the blob exists (no upload at all); otherwise it
  uploads straight to the final key (a second, usually page-cached, local read),
  hashing again on the way and deleting the object if the file changed in
  between.  This beats upload-to-temp + server-side copy, which always uploads
  and then copies every byte again on the server.
- ``put_stream`` cannot read twice: it uploads to a temp key while hashing,
  then server-side copies to the final key (skipped if it exists) and deletes
  the temp key.
- ``put_bytes`` hashes in memory and uploads directly, like ``put_file``.

Large bodies go up as multipart uploads with bounded memory.  A killed upload
leaves at most a temp object or an incomplete multipart upload, never a final
key; ``gc`` removes both once idle for longer than its grace period.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from catalog.blobstore.base import (
    BlobInfo,
    BlobStore,
    GcReport,
    HashingReader,
    as_predicate,
    blob_relpath,
    hash_file,
    parse_relpath,
    validate_sha256,
)
from catalog.blobstore.errors import BlobIntegrityError, BlobNotFoundError
from catalog.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_MIB = 1024 * 1024
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_DELETE_BATCH = 1000


def _is_missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in _MISSING_CODES


@contextmanager
def _s3_errors(action: str, sha256: str | None = None) -> Iterator[None]:
    """Translate boto errors (and I/O errors of a source) into StoreError subclasses."""
    try:
        yield
    except ClientError as exc:
        if sha256 is not None and _is_missing(exc):
            raise BlobNotFoundError(f"blob {sha256} not found") from exc
        raise StoreError(f"S3 {action} failed: {exc}") from exc
    except (BotoCoreError, Boto3Error, OSError) as exc:
        raise StoreError(f"S3 {action} failed: {exc}") from exc


class _BodyReader(io.RawIOBase):
    """A raw reader over a botocore streaming body (whose read errors become StoreError)."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        with _s3_errors("read"):
            data: bytes = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3BlobStore(BlobStore):
    """Blobs as objects in ``bucket`` under ``prefix`` ("" or ending in "/").

    A put that finds its blob already stored refreshes the object's
    last-modified time (a server-side self-copy) when it is older than
    ``refresh_after`` seconds, so gc's grace period must exceed
    ``refresh_after`` plus the time callers take to commit a reference.
    Instances pickle (the boto3 client is rebuilt lazily), so they can be
    shipped to Dask workers.
    """

    scheme: ClassVar[str] = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        multipart_chunksize: int = 8 * _MIB,
        refresh_after: float = 600.0,
    ) -> None:
        if not bucket:
            raise ConfigError("an S3 blob store needs a bucket name")
        if prefix and not prefix.endswith("/"):
            raise ConfigError(f"S3 prefix must be empty or end with '/': {prefix!r}")
        if multipart_chunksize < 5 * _MIB:
            raise ConfigError("multipart_chunksize must be at least 5 MiB (an S3 limit)")
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self.profile = profile
        self.refresh_after = refresh_after
        self.multipart_chunksize = multipart_chunksize
        self._client_cache: Any = None

    def __repr__(self) -> str:
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix}, endpoint_url={self.endpoint_url!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client_cache"] = None
        return state

    @property
    def _client(self) -> Any:
        if self._client_cache is None:
            try:
                session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
                self._client_cache = session.client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    config=Config(retries={"mode": "standard"}),
                )
            except BotoCoreError as exc:
                raise ConfigError(f"cannot configure the S3 client: {exc}") from exc
        return self._client_cache

    @property
    def _transfer(self) -> TransferConfig:
        config = TransferConfig(
            multipart_threshold=self.multipart_chunksize,
            multipart_chunksize=self.multipart_chunksize,
        )
        config.max_in_memory_upload_chunks = 2  # bounds the memory of a streamed upload
        return config

    def _key(self, sha256: str) -> str:
        return self.prefix + blob_relpath(sha256)

    # -- writing ---------------------------------------------------------

    def put_file(self, path: Path) -> BlobInfo:
        try:
            info = hash_file(path)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        key = self._key(info.sha256)
        if self._refresh_existing(key, info.size):
            return info
        with _s3_errors("upload"), path.open("rb") as src:
            reader = HashingReader(src)
            self._client.upload_fileobj(reader, self.bucket, key, Config=self._transfer)
        if reader.info() != info:
            self._delete_key(key)
            raise BlobIntegrityError(f"{path} changed while it was being stored")
        self._verify(key, info)
        return info

    def put_bytes(self, data: bytes) -> BlobInfo:
        info = BlobInfo(hashlib.sha256(data).hexdigest(), len(data))
        key = self._key(info.sha256)
        if self._refresh_existing(key, info.size):
            return info
        with _s3_errors("upload"):
            self._client.upload_fileobj(io.BytesIO(data), self.bucket, key, Config=self._transfer)
        self._verify(key, info)
        return info

    def put_stream(self, stream: BinaryIO) -> BlobInfo:
        tmp_key = f"{self.prefix}tmp/{uuid.uuid4().hex}"
        reader = HashingReader(stream)
        try:
            with _s3_errors("upload"):
                self._client.upload_fileobj(reader, self.bucket, tmp_key, Config=self._transfer)
            info = reader.info()
            key = self._key(info.sha256)
            if not self._refresh_existing(key, info.size):
                self._copy(tmp_key, key)
                self._verify(key, info)
        finally:
            self._discard_temp(tmp_key)
        return info

    def _discard_temp(self, tmp_key: str) -> None:
        """Delete a temp key; a failure is left for gc rather than masking the put's outcome."""
        try:
            self._client.delete_object(Bucket=self.bucket, Key=tmp_key)
        except (ClientError, BotoCoreError):
            return

    def _copy(self, src_key: str, dest_key: str, **extra: Any) -> None:
        """Server-side copy (multipart for large objects)."""
        with _s3_errors("copy"):
            self._client.copy(
                {"Bucket": self.bucket, "Key": src_key},
                self.bucket,
                dest_key,
                ExtraArgs=extra or None,
                Config=self._transfer,
            )

    def _head_or_none(self, key: str) -> dict[str, Any] | None:
        try:
            return self._client.head_object(Bucket=self.bucket, Key=key)  # type: ignore[no-any-return]
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise StoreError(f"S3 head of {key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 head of {key} failed: {exc}") from exc

    def _refresh_existing(self, key: str, size: int) -> bool:
        """True if ``key`` already holds a blob of ``size`` bytes; refresh its mtime if stale."""
        head = self._head_or_none(key)
        if head is None or head["ContentLength"] != size:
            return False
        if time.time() - head["LastModified"].timestamp() >= self.refresh_after:
            self._copy(key, key, MetadataDirective="REPLACE")
        return True

    def _verify(self, key: str, info: BlobInfo) -> None:
        head = self._head_or_none(key)
        got = None if head is None else head["ContentLength"]
        if got != info.size:
            raise BlobIntegrityError(f"blob {info.sha256}: stored {got} bytes, sent {info.size}")

    def _delete_key(self, key: str) -> None:
        with _s3_errors("delete"):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    # -- reading ---------------------------------------------------------

    def open(self, sha256: str) -> BinaryIO:
        key = self._key(sha256)
        with _s3_errors("get", sha256):
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        return io.BufferedReader(_BodyReader(body), buffer_size=_MIB)

    def exists(self, sha256: str) -> bool:
        return self._head_or_none(self._key(sha256)) is not None

    def size(self, sha256: str) -> int:
        head = self._head_or_none(self._key(sha256))
        if head is None:
            raise BlobNotFoundError(f"blob {sha256} not found")
        return int(head["ContentLength"])

    def local_path(self, sha256: str) -> Path | None:
        validate_sha256(sha256)
        return None

    def fetch_to(self, sha256: str, dest: Path, link: bool = True) -> None:
        expected = self.size(sha256)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            with _s3_errors("download", sha256):
                dest.parent.mkdir(parents=True, exist_ok=True)
                self._client.download_file(
                    self.bucket, self._key(sha256), str(tmp), Config=self._transfer
                )
                got = tmp.stat().st_size
                if got != expected:
                    raise BlobIntegrityError(
                        f"blob {sha256}: downloaded {got} bytes, expected {expected}"
                    )
                os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    # -- listing and deleting --------------------------------------------

    def delete(self, sha256: str) -> None:
        self._delete_key(self._key(sha256))

    def _list(self, sub: str) -> Iterator[dict[str, Any]]:
        """Yield the listing entries (Key, LastModified, Size) under ``<prefix><sub>``."""
        paginator = self._client.get_paginator("list_objects_v2")
        with _s3_errors("list"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + sub):
                yield from page.get("Contents", [])

    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        for obj in self._list("sha256/"):
            sha = parse_relpath(obj["Key"][len(self.prefix) :])
            if sha is not None:
                yield sha, obj["LastModified"].timestamp()

    def gc(
        self,
        referenced: Callable[[str], bool] | Container[str],
        grace_seconds: float = 3600,
    ) -> GcReport:
        """See :meth:`BlobStore.gc`; doomed keys are deleted in batches of up to 1000.

        A blob re-put (and so refreshed) between its listing and its batch's
        delete can still be lost: keep the grace period well above the batch time.
        """
        is_referenced = as_predicate(referenced)
        report = GcReport()
        doomed: list[str] = []
        for obj in self._list("sha256/"):
            sha = parse_relpath(obj["Key"][len(self.prefix) :])
            if sha is None:
                continue
            report.scanned += 1
            if time.time() - obj["LastModified"].timestamp() < grace_seconds:
                report.kept_recent += 1
            elif is_referenced(sha):
                report.kept_referenced += 1
            else:
                doomed.append(obj["Key"])
                report.deleted += 1
                report.bytes_freed += int(obj["Size"])
                if len(doomed) == _DELETE_BATCH:
                    self._delete_batch(doomed)
        for obj in self._list("tmp/"):
            if time.time() - obj["LastModified"].timestamp() >= grace_seconds:
                doomed.append(obj["Key"])
                report.stale_temps_deleted += 1
                report.bytes_freed += int(obj["Size"])
                if len(doomed) == _DELETE_BATCH:
                    self._delete_batch(doomed)
        self._delete_batch(doomed)
        report.stale_temps_deleted += self._abort_stale_uploads(grace_seconds)
        return report

    def _delete_batch(self, keys: list[str]) -> None:
        """Delete ``keys`` in one request and empty the list."""
        if not keys:
            return
        with _s3_errors("delete"):
            resp = self._client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
            )
        errors = resp.get("Errors", [])
        if errors:
            raise StoreError(f"S3 delete failed for {len(errors)} keys, e.g. {errors[0]}")
        keys.clear()

    def _abort_stale_uploads(self, grace_seconds: float) -> int:
        """Abort multipart uploads under the prefix with no activity within the grace period."""
        aborted = 0
        paginator = self._client.get_paginator("list_multipart_uploads")
        with _s3_errors("multipart cleanup"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    cutoff = time.time() - grace_seconds
                    if upload["Initiated"].timestamp() > cutoff or self._last_part(upload) > cutoff:
                        continue
                    self._client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        return aborted

    def _last_part(self, upload: dict[str, Any]) -> float:
        """When the upload's latest part arrived (epoch seconds; 0 if it has none)."""
        latest = 0.0
        paginator = self._client.get_paginator("list_parts")
        pages = paginator.paginate(
            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
        for page in pages:
            for part in page.get("Parts", []):
                latest = max(latest, part["LastModified"].timestamp())
        return latest
