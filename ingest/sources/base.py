"""The source interface: a listing streamed in key order, and reads of objects or ranges.

A :class:`Source` streams its listing in lexicographic key order (so a listing can resume
after any key) and reads whole objects or byte ranges.  Sources are pickled to Dask workers:
they hold only their address; a :class:`BucketSource` opens its client lazily in each
process, one per process and address.
"""

from __future__ import annotations

import fnmatch
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

from catalog.errors import GearbrokerError

_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()
#: Threads reading ahead for one caller (:meth:`Source.read_ahead`), and how far ahead.
READ_THREADS = 4
READ_AHEAD_BYTES = 32 * 1024 * 1024
READ_BATCH_BYTES = 1024 * 1024


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

    def check(self) -> None:
        """Raise ConfigError now if the source cannot be used (no client library, no
        account or credentials configured), rather than at the first listing."""

    def read_ahead(
        self, objects: Sequence[Sequence[Any]]
    ) -> Iterator[tuple[str, bytes | SourceError]]:
        """``(key, bytes)`` for each object as listed (``(key, size, ...)``) in order, read by
        :data:`READ_THREADS` threads up to :data:`READ_AHEAD_BYTES` (and at least one
        object) ahead of the caller, so that disk reads or GETs overlap its work.  An object
        that cannot be read yields its SourceError in place of its bytes.  Each thread takes
        a run of objects up to :data:`READ_BATCH_BYTES` at a time (a future per object cost
        more than reading a small file from the page cache)."""
        queue: deque[tuple[list[str], int, Future[list[bytes | SourceError]]]] = deque()
        ahead = 0
        todo = iter(objects)
        with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="gb-read") as pool:
            try:
                while True:
                    while not queue or ahead < READ_AHEAD_BYTES:
                        keys, size = _next_batch(todo)
                        if not keys:
                            break
                        queue.append((keys, size, pool.submit(self._read_each, keys)))
                        ahead += size
                    if not queue:
                        return
                    keys, size, future = queue.popleft()
                    ahead -= size
                    yield from zip(keys, future.result(), strict=True)
            finally:
                for _keys, _size, pending in queue:
                    pending.cancel()

    def _read_each(self, keys: list[str]) -> list[bytes | SourceError]:
        out: list[bytes | SourceError] = []
        for key in keys:
            try:
                out.append(self.read(key))
            except SourceError as exc:
                out.append(exc)
        return out


def _next_batch(todo: Iterator[Sequence[Any]]) -> tuple[list[str], int]:
    """The keys of the next objects of ``todo`` up to :data:`READ_BATCH_BYTES` (and no more
    than :data:`READ_AHEAD_BYTES`; at least one), and their bytes."""
    keys: list[str] = []
    size = 0
    while size < min(READ_BATCH_BYTES, READ_AHEAD_BYTES):
        nxt = next(todo, None)
        if nxt is None:
            break
        keys.append(nxt[0])
        size += nxt[1]
    return keys, size


@dataclass
class BucketSource(Source):
    """Objects below ``SCHEME://bucket/prefix`` of an object store; keys are relative to the
    prefix.  ``endpoint_url`` selects another server of the same API (an emulator, an
    on-premises gateway); ``profile`` names a credentials profile where the API has them.

    Subclasses name their :attr:`SCHEME`, build their client in :meth:`make_client` (made
    once per process and address, and never pickled) and fetch bytes in :meth:`get`."""

    SCHEME: ClassVar[str]

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    profile: str | None = None
    _client: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.prefix = self.prefix.strip("/") + "/" if self.prefix.strip("/") else ""
        self.url = f"{self.SCHEME}://{self.bucket}/{self.prefix}"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> Any:
        """This process's client for the source's address (clients are costly to make)."""
        if self._client is None:
            key = (type(self), self.bucket, self.endpoint_url, self.profile)
            with _CLIENTS_LOCK:  # read_ahead's threads may ask first at once
                if key not in _CLIENTS:
                    _CLIENTS[key] = self.make_client()
            self._client = _CLIENTS[key]
        return self._client

    def check(self) -> None:
        _ = self.client  # making the client is the check

    @abstractmethod
    def make_client(self) -> Any:
        """A new client (called at most once per process and address); raises ConfigError
        when the library or the configuration it needs is missing."""

    @abstractmethod
    def get(self, key: str, span: tuple[int, int] | None) -> bytes:
        """The whole object ``key``, or ``length`` bytes from ``start`` for ``span`` =
        ``(start, length)`` with ``length > 0`` (fewer at the end); SourceError otherwise."""

    def read(self, key: str) -> bytes:
        return self.get(key, None)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:  # no request: no object store API has a form for an empty span
            return b""
        return self.get(key, (start, length))

    def listed_key(self, name: str, start_after: str | None) -> str | None:
        """The key of a listed object ``name``; None for the prefix itself, a folder marker
        (``.../``) or a key not after ``start_after`` (servers that ignore "start after")."""
        key = name[len(self.prefix) :]
        if not key or key.endswith("/") or (start_after is not None and key <= start_after):
            return None
        return key

    def object_url(self, key: str) -> str:
        """The full URL of ``key``, for messages."""
        return self.url + key


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


def filtered(objects: Iterator[SourceObject], keys: KeyFilter) -> Iterator[SourceObject]:
    """The objects ``keys`` accepts."""
    return (obj for obj in objects if keys.accepts(obj.key))


def globs(values: Sequence[str] | None) -> tuple[str, ...]:
    """Patterns from repeated options (each may hold several, comma-separated)."""
    out: list[str] = []
    for value in values or ():
        out += [part.strip() for part in value.split(",") if part.strip()]
    return tuple(out)
