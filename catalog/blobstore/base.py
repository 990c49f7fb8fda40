"""The blob store interface and the helpers both implementations share.

A blob is an immutable byte string named by the lowercase hex sha256 of its
content.  Stores lay blobs out as ``sha256/ab/cd/<hex>`` under their root and
stage writes under ``tmp/`` so that a final name only ever holds complete,
verified content.
"""

from __future__ import annotations

import hashlib
import io
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar, cast

from catalog.errors import InvalidInputError

CHUNK_SIZE = 1024 * 1024
"""Bytes read per step when hashing or copying; bounds the memory of every put."""

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BlobInfo:
    """The name (lowercase hex sha256) and size in bytes of a stored blob."""

    sha256: str
    size: int


@dataclass
class GcReport:
    """What :meth:`BlobStore.gc` did.

    ``kept_recent`` blobs were younger than the grace period (their references
    were not checked); ``stale_temps_deleted`` counts abandoned uploads removed
    (temp files, temp objects, incomplete multipart uploads); ``bytes_freed``
    covers deleted blobs and temp files or objects.
    """

    scanned: int = 0
    deleted: int = 0
    kept_referenced: int = 0
    kept_recent: int = 0
    bytes_freed: int = 0
    stale_temps_deleted: int = 0


def validate_sha256(sha256: str) -> str:
    """Return ``sha256`` if it is 64 lowercase hex characters, else raise InvalidInputError."""
    if not isinstance(sha256, str) or _SHA256_RE.fullmatch(sha256) is None:
        raise InvalidInputError(f"not a lowercase hex sha256 digest: {sha256!r}")
    return sha256


def blob_relpath(sha256: str) -> str:
    """Return the layout path ``sha256/ab/cd/<hex>`` of a (validated) digest."""
    validate_sha256(sha256)
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def parse_relpath(relpath: str) -> str | None:
    """Return the digest named by a layout path ``sha256/ab/cd/<hex>``, or None if it is not one."""
    parts = relpath.split("/")
    if len(parts) != 4 or parts[0] != "sha256":
        return None
    sha = parts[3]
    if _SHA256_RE.fullmatch(sha) is None or parts[1] != sha[:2] or parts[2] != sha[2:4]:
        return None
    return sha


def as_predicate(referenced: Callable[[str], bool] | Container[str]) -> Callable[[str], bool]:
    """Turn gc's ``referenced`` (a predicate or a container of digests) into a predicate."""
    if isinstance(referenced, Container):
        return referenced.__contains__
    return referenced


def hash_file(path: Path) -> BlobInfo:
    """Hash a file in one read pass (constant memory)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as src:
        while chunk := src.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return BlobInfo(digest.hexdigest(), size)


class HashingReader:
    """A non-seekable reader that hashes and counts every byte read from ``stream``.

    ``read(n)`` returns exactly ``n`` bytes unless the stream ends first (uploaders
    such as s3transfer rely on full parts); ``read()`` drains the stream.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()
        self._size = 0

    def readable(self) -> bool:
        """Always True: this object is read from."""
        return True

    def seekable(self) -> bool:
        """Always False: every byte must pass through the hash exactly once."""
        return False

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (all remaining if negative or None), hashing them."""
        want = -1 if size is None or size < 0 else size
        pieces: list[bytes] = []
        got = 0
        while want < 0 or got < want:
            step = CHUNK_SIZE if want < 0 else min(CHUNK_SIZE, want - got)
            chunk = self._stream.read(step)
            if not chunk:
                break
            pieces.append(chunk)
            got += len(chunk)
        data = b"".join(pieces)
        self._digest.update(data)
        self._size += len(data)
        return data

    def info(self) -> BlobInfo:
        """The digest and size of everything read so far."""
        return BlobInfo(self._digest.hexdigest(), self._size)


#: A blob built in memory (:meth:`BlobBatch.put_built`) spills to a temp file past this size.
SPOOL_BYTES = 256 * 1024 * 1024
Writer = Callable[[BinaryIO], None]


class BlobBatch:
    """The put side of :meth:`BlobStore.batch`."""

    def __init__(
        self,
        put_stream: Callable[[BinaryIO], BlobInfo],
        put_built: Callable[[Writer], BlobInfo] | None = None,
    ) -> None:
        self._put_stream = put_stream
        self._put_built = put_built

    def put_stream(self, stream: BinaryIO) -> BlobInfo:
        return self._put_stream(stream)

    def put_bytes(self, data: bytes) -> BlobInfo:
        return self._put_stream(io.BytesIO(data))

    def put_built(self, write: Writer) -> BlobInfo:
        """A blob of what ``write`` writes into the seekable binary file it is given (a zip
        archive, say): straight into the store's temp file where the store has one, else
        through a spooled temp file."""
        if self._put_built is not None:
            return self._put_built(write)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            write(cast(BinaryIO, spool))
            spool.seek(0)
            return self._put_stream(cast(BinaryIO, spool))


class BlobStore(ABC):
    """A content-addressed store of immutable blobs named by their sha256.

    Every method taking a digest rejects anything but 64 lowercase hex
    characters with :class:`catalog.errors.InvalidInputError`.  Failures to read,
    write or verify raise :class:`catalog.errors.StoreError` subclasses; a missing
    blob raises :class:`BlobNotFoundError`.  Stores are safe to share between
    threads and processes: puts are atomic, and concurrent puts of the same
    content converge on one blob.
    """

    scheme: ClassVar[str]

    @abstractmethod
    def put_file(self, path: Path) -> BlobInfo:
        """Store the content of the file at ``path``; durable once this returns."""

    @abstractmethod
    def put_stream(self, stream: BinaryIO) -> BlobInfo:
        """Store everything read from ``stream`` (chunked, constant memory); durable on return.

        If reading the stream fails, no blob is created and the error is raised
        (an ``OSError`` as :class:`StoreError`).
        """

    @abstractmethod
    def put_bytes(self, data: bytes) -> BlobInfo:
        """Store ``data``; durable once this returns."""

    @contextmanager
    def batch(self) -> Iterator[BlobBatch]:
        """Puts whose durability is settled together when the block ends without an error:
        a blob put in the batch is durable (and readable) only after the ``with`` block, which
        is when its BlobInfo may be recorded anywhere.  The default puts each blob at once;
        a local store defers the syncs of all of them to one at the end."""
        yield BlobBatch(self.put_stream)

    @abstractmethod
    def open(self, sha256: str) -> BinaryIO:
        """Open the blob for reading (the caller closes it)."""

    @abstractmethod
    def exists(self, sha256: str) -> bool:
        """Whether the blob is stored."""

    @abstractmethod
    def size(self, sha256: str) -> int:
        """The blob's size in bytes."""

    @abstractmethod
    def local_path(self, sha256: str) -> Path | None:
        """The blob's real file path for a local store (None for a remote one).

        Raises BlobNotFoundError when a local store lacks the blob.
        """

    @abstractmethod
    def fetch_to(self, sha256: str, dest: Path, link: bool = True) -> None:
        """Materialise the blob at ``dest`` (replacing it atomically), verifying its size.

        With ``link`` a local store hard-links when ``dest`` is on the same
        filesystem; otherwise the bytes are copied or downloaded.  Missing parent
        folders of ``dest`` are created.
        """

    @abstractmethod
    def delete(self, sha256: str) -> None:
        """Remove the blob; removing an absent blob does nothing."""

    @abstractmethod
    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        """Yield ``(sha256, last-modified epoch seconds)`` of every blob, streamed."""

    @abstractmethod
    def gc(
        self,
        referenced: Callable[[str], bool] | Container[str],
        grace_seconds: float = 3600,
    ) -> GcReport:
        """Delete blobs that are older than ``grace_seconds`` and not ``referenced``.

        A put refreshes the last-modified time of a blob it deduplicates against,
        so a blob written (or re-put) by a process that has not yet committed its
        reference survives as long as that commit happens within the grace period.
        Abandoned uploads (temp files/objects, incomplete multipart uploads) idle
        for longer than the grace period are removed too.
        """
