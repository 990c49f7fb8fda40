"""The blob store in a local (or network-mounted) directory.

Layout: ``<root>/sha256/ab/cd/<hex>`` for blobs, ``<root>/tmp/`` for writes in
progress (same filesystem, so the final ``os.replace`` is atomic).  A put hashes
while it copies (one read pass; a blob built in place, such as a zip, is hashed from
the mapped temp file); unless the blob is already stored, it then fsyncs
the file, renames it into place and fsyncs the directory.  Blobs are mode 0o444 so
that a hard link in a job folder cannot be opened for writing by an unprivileged
process; hard links share the inode, so a privileged process could still alter the
store through such a link: job staging must mount its inputs read-only.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import mmap
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, ClassVar

from catalog.blobstore.base import (
    CHUNK_SIZE,
    BlobBatch,
    BlobInfo,
    BlobStore,
    GcReport,
    HashingReader,
    Writer,
    as_predicate,
    blob_relpath,
    parse_relpath,
)
from catalog.blobstore.errors import BlobIntegrityError, BlobNotFoundError
from catalog.errors import StoreError

BLOB_MODE = 0o444


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_LIBC = ctypes.CDLL(None, use_errno=True)


def _syncfs(path: Path) -> bool:
    """``syncfs(2)`` on the filesystem holding ``path``: False where the call is missing."""
    syncfs = getattr(_LIBC, "syncfs", None)
    if syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
    return True


def _temp_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")


class LocalBlobStore(BlobStore):
    """Blobs as read-only files under ``root`` (created if missing)."""

    scheme: ClassVar[str] = "file"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "sha256"
        self._tmp = root / "tmp"
        try:
            self._blobs.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create blob store at {root}: {exc}") from exc

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def _path(self, sha256: str) -> Path:
        return self.root / blob_relpath(sha256)

    # -- writing ---------------------------------------------------------

    def put_file(self, path: Path) -> BlobInfo:
        try:
            src = path.open("rb")
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        with src:
            return self.put_stream(src)

    def put_bytes(self, data: bytes) -> BlobInfo:
        return self.put_stream(io.BytesIO(data))

    def put_stream(self, stream: BinaryIO) -> BlobInfo:
        tmp, info = self._write_temp(stream, sync=True)
        if tmp is not None:
            try:
                self._commit(tmp, info)
            except OSError as exc:
                raise StoreError(f"cannot store blob: {exc}") from exc
            finally:
                tmp.unlink(missing_ok=True)
        return info

    def _write_temp(self, stream: BinaryIO, sync: bool) -> tuple[Path | None, BlobInfo]:
        """Copy ``stream`` to a temp file, hashing it: (the temp file, or None when the blob
        is stored already, and the blob's info).  ``sync``: fsync it; else start its
        writeback (the caller syncs it before it is renamed into place)."""

        def copy(out: BinaryIO) -> BlobInfo:
            reader = HashingReader(stream)
            while chunk := reader.read(CHUNK_SIZE):
                out.write(chunk)
            return reader.info()

        return self._temp(copy, sync)

    def _build_temp(self, write: Writer, sync: bool) -> tuple[Path | None, BlobInfo]:
        """Like :meth:`_write_temp` for the bytes ``write`` writes into the temp file; they
        are hashed afterwards from the page cache (mapped, not copied)."""

        def build(out: BinaryIO) -> BlobInfo:
            write(out)
            out.flush()
            size = os.fstat(out.fileno()).st_size
            if not size:
                return BlobInfo(hashlib.sha256().hexdigest(), 0)
            with mmap.mmap(out.fileno(), size, access=mmap.ACCESS_READ) as mapped:
                return BlobInfo(hashlib.sha256(mapped).hexdigest(), size)

        return self._temp(build, sync)

    def _temp(
        self, fill: Callable[[BinaryIO], BlobInfo], sync: bool
    ) -> tuple[Path | None, BlobInfo]:
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        except OSError as exc:
            raise StoreError(f"cannot create a temp file in {self._tmp}: {exc}") from exc
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w+b") as out:
                info = fill(out)
                if self._refresh_existing(self._path(info.sha256), info.size):
                    tmp.unlink()
                    return None, info  # already durable: nothing to sync for a dropped copy
                out.flush()
                os.fchmod(out.fileno(), BLOB_MODE)
                if sync:
                    os.fsync(out.fileno())
                elif hasattr(os, "posix_fadvise"):  # Linux: starts the writeback now
                    os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StoreError(f"cannot store blob: {exc}") from exc
            raise
        return tmp, info

    @contextmanager
    def batch(self) -> Iterator[BlobBatch]:
        """Puts written to temp files with their writeback started; at the end one sync of
        the filesystem (or an fsync per file where ``syncfs`` is missing), the renames into
        place, and one more sync for the new directory entries.  On an error in the block
        the temp files are removed and no blob of the batch appears."""
        pending: list[tuple[Path, BlobInfo]] = []

        def pend(written: tuple[Path | None, BlobInfo]) -> BlobInfo:
            tmp, info = written
            if tmp is not None:
                pending.append((tmp, info))
            return info

        try:
            yield BlobBatch(
                lambda stream: pend(self._write_temp(stream, sync=False)),
                lambda write: pend(self._build_temp(write, sync=False)),
            )
            if pending:
                self._sync([tmp for tmp, _info in pending])
                folders = {self._commit(tmp, info, sync=False) for tmp, info in pending}
                self._sync_dirs({f for f in folders if f is not None})
        except OSError as exc:
            raise StoreError(f"cannot store blobs: {exc}") from exc
        finally:
            for tmp, _info in pending:
                tmp.unlink(missing_ok=True)

    def _sync(self, files: list[Path]) -> None:
        """Make ``files`` durable: one ``syncfs`` of the store's filesystem, else fsyncs."""
        if _syncfs(self.root):
            return
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _sync_dirs(self, folders: set[Path]) -> None:
        if not folders or _syncfs(self.root):
            return
        for folder in {*folders, *(f.parent for f in folders), self._blobs}:
            _fsync_dir(folder)

    def _commit(self, tmp: Path, info: BlobInfo, sync: bool = True) -> Path | None:
        """Move a complete temp file to its final name, or drop it when the blob exists;
        returns the folder that gained the blob (None if it existed).  ``sync``: fsync the
        folders that gained entries (else the caller syncs them)."""
        final = self._path(info.sha256)
        if self._refresh_existing(final, info.size):
            return None
        self._make_dirs(final.parent, sync=sync)
        os.replace(tmp, final)
        if sync:
            _fsync_dir(final.parent)
        return final.parent

    def _refresh_existing(self, final: Path, size: int) -> bool:
        """True if ``final`` already holds the blob; its mtime is then bumped for gc's grace."""
        try:
            if final.stat().st_size != size:
                return False
            os.utime(final)
        except OSError:
            return False
        return True

    def _make_dirs(self, folder: Path, sync: bool = True) -> None:
        """Create ``sha256/ab/cd`` as needed, fsyncing each parent that gained an entry
        (unless ``sync`` is False: the caller syncs them)."""
        for sub in (folder.parent, folder):
            try:
                sub.mkdir()
            except FileExistsError:
                continue
            if sync:
                _fsync_dir(sub.parent)

    # -- reading ---------------------------------------------------------

    def open(self, sha256: str) -> BinaryIO:
        path = self._path(sha256)
        try:
            return path.open("rb")
        except FileNotFoundError as exc:
            raise BlobNotFoundError(f"blob {sha256} not found") from exc
        except OSError as exc:
            raise StoreError(f"cannot open blob {sha256}: {exc}") from exc

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def size(self, sha256: str) -> int:
        path = self._path(sha256)
        try:
            return path.stat().st_size
        except FileNotFoundError as exc:
            raise BlobNotFoundError(f"blob {sha256} not found") from exc
        except OSError as exc:
            raise StoreError(f"cannot stat blob {sha256}: {exc}") from exc

    def local_path(self, sha256: str) -> Path | None:
        path = self._path(sha256)
        if not path.is_file():
            raise BlobNotFoundError(f"blob {sha256} not found")
        return path

    def fetch_to(self, sha256: str, dest: Path, link: bool = True) -> None:
        src = self._path(sha256)
        expected = self.size(sha256)
        tmp = _temp_name(dest)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            linked = False
            if link:
                try:
                    os.link(src, tmp)
                    linked = True
                except OSError:
                    linked = False  # another filesystem, or links not allowed: copy
            if not linked:
                shutil.copyfile(src, tmp)
            got = tmp.stat().st_size
            if got != expected:
                raise BlobIntegrityError(f"blob {sha256}: copied {got} bytes, expected {expected}")
            os.replace(tmp, dest)
        except OSError as exc:
            raise StoreError(f"cannot fetch blob {sha256} to {dest}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    # -- listing and deleting --------------------------------------------

    def delete(self, sha256: str) -> None:
        try:
            self._path(sha256).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot delete blob {sha256}: {exc}") from exc

    def _scan(self) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """Yield ``(sha256, entry)`` for every well-formed blob file, streamed."""
        try:
            for top in os.scandir(self._blobs):
                if not top.is_dir(follow_symlinks=False):
                    continue
                for mid in os.scandir(top.path):
                    if not mid.is_dir(follow_symlinks=False):
                        continue
                    for entry in os.scandir(mid.path):
                        sha = parse_relpath(f"sha256/{top.name}/{mid.name}/{entry.name}")
                        if sha is not None and entry.is_file(follow_symlinks=False):
                            yield sha, entry
        except OSError as exc:
            raise StoreError(f"cannot list blobs under {self._blobs}: {exc}") from exc

    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        for sha, entry in self._scan():
            try:
                yield sha, entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue  # deleted while listing

    def gc(
        self,
        referenced: Callable[[str], bool] | Container[str],
        grace_seconds: float = 3600,
    ) -> GcReport:
        is_referenced = as_predicate(referenced)
        report = GcReport()
        for sha, entry in self._scan():
            report.scanned += 1
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if time.time() - st.st_mtime < grace_seconds:
                report.kept_recent += 1
                continue
            if is_referenced(sha):
                report.kept_referenced += 1
                continue
            freed = self._unlink_if_stale(Path(entry.path), grace_seconds)
            if freed is None:
                report.kept_recent += 1
            else:
                report.deleted += 1
                report.bytes_freed += freed
        try:
            temps = list(os.scandir(self._tmp))
        except OSError as exc:
            raise StoreError(f"cannot list {self._tmp}: {exc}") from exc
        for entry in temps:
            freed = self._unlink_if_stale(Path(entry.path), grace_seconds)
            if freed is not None:
                report.stale_temps_deleted += 1
                report.bytes_freed += freed
        return report

    @staticmethod
    def _unlink_if_stale(path: Path, grace_seconds: float) -> int | None:
        """Unlink ``path`` if its mtime, read now, is older than the grace period.

        Returns the bytes freed, or None if the file was kept or already gone.
        Re-reading the mtime right before unlinking keeps a blob that a concurrent
        put deduplicated against (and so refreshed) after the listing saw it.
        """
        try:
            st = path.stat()
            if time.time() - st.st_mtime < grace_seconds:
                return None
            path.unlink()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot delete {path}: {exc}") from exc
        return st.st_size
