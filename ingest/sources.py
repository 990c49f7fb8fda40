"""Where ingested files come from: a local folder or an S3 bucket, behind one small interface.

A :class:`Source` streams its listing in lexicographic key order (so a listing can resume
after any key) and reads whole objects or byte ranges.  Sources are pickled to Dask workers:
they hold only their address, and open clients lazily in each process.

``gs://`` and ``az://`` sources are not built; :func:`open_source` says so.
"""

from __future__ import annotations

import fnmatch
import os
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from catalog.errors import ConfigError, GearbrokerError, NotFoundError

_CLIENTS: dict[tuple[str | None, str | None], Any] = {}
_CLIENTS_LOCK = threading.Lock()
#: Threads reading ahead for one caller (:meth:`Source.read_ahead`), and how far ahead.
READ_THREADS = 4
READ_AHEAD_BYTES = 32 * 1024 * 1024


class SourceError(GearbrokerError):
    """A source cannot be listed or an object cannot be read."""


@dataclass(frozen=True)
class SourceObject:
    """One listed object: its key (a relative ``/`` path), size in bytes and version tag."""

    key: str
    size: int
    etag: str


class Source(ABC):
    """A listable, readable set of objects named by relative keys."""

    url: str

    @abstractmethod
    def iter_objects(self, start_after: str | None = None) -> Iterator[SourceObject]:
        """Every object with a key greater than ``start_after``, streamed in key order."""

    @abstractmethod
    def read(self, key: str) -> bytes:
        """The whole object."""

    @abstractmethod
    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from offset ``start`` (fewer at the end of the object)."""

    def read_ahead(
        self, objects: Sequence[Sequence[Any]]
    ) -> Iterator[tuple[str, bytes | SourceError]]:
        """``(key, bytes)`` for each object as listed (``(key, size, ...)``) in order, read by
        :data:`READ_THREADS` threads up to :data:`READ_AHEAD_BYTES` (and at least one
        object) ahead of the caller, so that disk reads or GETs overlap its work.  An object
        that cannot be read yields its SourceError in place of its bytes."""
        queue: deque[tuple[str, int, Future[bytes]]] = deque()
        ahead = 0
        todo = iter(objects)
        with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="gb-read") as pool:
            try:
                while True:
                    while not queue or ahead < READ_AHEAD_BYTES:
                        nxt = next(todo, None)
                        if nxt is None:
                            break
                        queue.append((nxt[0], nxt[1], pool.submit(self.read, nxt[0])))
                        ahead += nxt[1]
                    if not queue:
                        return
                    key, size, future = queue.popleft()
                    ahead -= size
                    try:
                        data: bytes | SourceError = future.result()
                    except SourceError as exc:
                        data = exc
                    yield key, data
            finally:
                for _key, _size, pending in queue:
                    pending.cancel()


@dataclass(frozen=True)
class KeyFilter:
    """Include/exclude globs on keys (``fnmatch`` syntax, ``*`` also crosses ``/``).

    An object passes if it matches any include (or there are none) and no exclude; a
    pattern without ``/`` is matched against the key's base name as well.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def accepts(self, key: str) -> bool:
        if self.include and not any(_match(key, pat) for pat in self.include):
            return False
        return not any(_match(key, pat) for pat in self.exclude)


def _match(key: str, pattern: str) -> bool:
    if fnmatch.fnmatchcase(key, pattern):
        return True
    return "/" not in pattern and fnmatch.fnmatchcase(key.rsplit("/", 1)[-1], pattern)


class LocalFolderSource(Source):
    """Files below a local folder; keys are their ``/``-separated paths relative to it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise NotFoundError(f"no such folder: {root}")
        self.url = str(self.root)

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
        """The local file of ``key`` (refusing keys that leave the root)."""
        path = (self.root / key).resolve()
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


@dataclass
class S3Source(Source):
    """Objects below ``s3://bucket/prefix``; keys are relative to the prefix.

    Credentials, region and profile come from the standard AWS chain; ``endpoint_url``
    selects any S3-compatible server.  Listing is paginated (1000 keys per request).
    """

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    profile: str | None = None
    _client: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.prefix = self.prefix.strip("/") + "/" if self.prefix.strip("/") else ""
        self.url = f"s3://{self.bucket}/{self.prefix}"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> Any:
        """A boto3 S3 client, one per process and address (clients are costly to make)."""
        if self._client is None:
            key = (self.endpoint_url, self.profile)
            with _CLIENTS_LOCK:  # read_ahead's threads may ask first at once
                if key not in _CLIENTS:
                    import boto3

                    session = boto3.session.Session(profile_name=self.profile)
                    _CLIENTS[key] = session.client("s3", endpoint_url=self.endpoint_url)
            self._client = _CLIENTS[key]
        return self._client

    def iter_objects(self, start_after: str | None = None) -> Iterator[SourceObject]:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
        if start_after is not None:
            kwargs["StartAfter"] = self.prefix + start_after
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    if key and not key.endswith("/"):
                        yield SourceObject(key, int(item["Size"]), item["ETag"].strip('"'))
        except (BotoCoreError, ClientError) as exc:
            raise SourceError(f"cannot list {self.url}: {exc}") from exc

    def read(self, key: str) -> bytes:
        return self._get(key, None)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        return self._get(key, f"bytes={start}-{start + length - 1}")

    def _get(self, key: str, byte_range: str | None) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs = {"Bucket": self.bucket, "Key": self.prefix + key}
        if byte_range:
            kwargs["Range"] = byte_range
        try:
            body: bytes = self.client.get_object(**kwargs)["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise SourceError(f"cannot read s3://{self.bucket}/{self.prefix}{key}: {exc}") from exc
        return body


def open_source(url: str, *, endpoint_url: str | None = None, profile: str | None = None) -> Source:
    """The source named by ``url``: a folder path (or ``file://``) or ``s3://bucket/prefix``."""
    if "://" not in url:
        return LocalFolderSource(Path(url).expanduser())
    parts = urlsplit(url)
    if parts.scheme == "file":
        return LocalFolderSource(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"no bucket in {url!r}")
        return S3Source(parts.netloc, unquote(parts.path), endpoint_url, profile)
    if parts.scheme in ("gs", "az"):
        raise ConfigError(
            f"{parts.scheme}:// sources are not supported by this gearbroker: "
            "copy the data to a folder or an S3-compatible bucket"
        )
    raise ConfigError(f"unsupported source URL scheme {parts.scheme!r} in {url!r}")


def filtered(objects: Iterator[SourceObject], keys: KeyFilter) -> Iterator[SourceObject]:
    """The objects ``keys`` accepts."""
    return (obj for obj in objects if keys.accepts(obj.key))


def globs(values: Sequence[str] | None) -> tuple[str, ...]:
    """Patterns from repeated options (each may hold several, comma-separated)."""
    out: list[str] = []
    for value in values or ():
        out += [part.strip() for part in value.split(",") if part.strip()]
    return tuple(out)
