"""A local folder as an ingest source."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from catalog.errors import NotFoundError
from ingest.sources.base import Source, SourceError, SourceObject

#: Resolved folders a source keeps (a listing visits each once, in order).
FOLDER_CACHE = 4096


class LocalFolderSource(Source):
    """Files below a local folder; keys are their ``/``-separated paths relative to it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise NotFoundError(f"no such folder: {root}")
        self.url = str(self.root)
        self._folders: dict[str, Path] = {}

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_folders": {}}

    def iter_objects(self, start_after: str | None = None) -> Iterator[SourceObject]:
        yield from self._walk(self.root, "", start_after)

    def _walk(self, folder: Path, prefix: str, after: str | None) -> Iterator[SourceObject]:
        # Sorting directories as "name/" makes the walk's order the keys' string order.
        try:
            with os.scandir(folder) as scan:
                entries = sorted(
                    ((e.name + "/" if e.is_dir(follow_symlinks=False) else e.name), e) for e in scan
                )
        except OSError as exc:
            raise SourceError(f"cannot list {folder}: {exc}") from exc
        for name, entry in entries:
            key = prefix + name
            if name.endswith("/"):
                if after is None or key > after or after.startswith(key):
                    yield from self._walk(Path(entry.path), key, after)
            elif (after is None or key > after) and entry.is_file(follow_symlinks=True):
                stat = entry.stat()
                yield SourceObject(key, stat.st_size, str(stat.st_mtime_ns))

    def path(self, key: str) -> Path:
        """The local file of ``key``, refusing keys that leave the root (by ``..`` or by a
        symbolic link).  Each folder is resolved once (up to :data:`FOLDER_CACHE` of them);
        a file costs one ``lstat``, and a full resolve only when it is itself a link."""
        folder, _, name = key.rpartition("/")
        parent = self._folders.get(folder)
        if parent is None:
            parent = self._inside((self.root / folder).resolve(), key)
            if len(self._folders) >= FOLDER_CACHE:
                self._folders.clear()
            self._folders[folder] = parent
        if name in ("", ".", ".."):
            raise SourceError(f"key {key!r} does not name a file")
        path = parent / name
        return self._inside(path.resolve(), key) if path.is_symlink() else path

    def _inside(self, path: Path, key: str) -> Path:
        if not path.is_relative_to(self.root):
            raise SourceError(f"key {key!r} leaves the source folder")
        return path

    def read(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read {key}: {exc}") from exc

    def read_range(self, key: str, start: int, length: int) -> bytes:
        try:
            with self.path(key).open("rb") as fh:
                fh.seek(start)
                return fh.read(length)
        except OSError as exc:
            raise SourceError(f"cannot read {key}: {exc}") from exc
