"""One watch stream over this broker's Jobs, kept in an in-memory cache by a background thread.

:class:`JobWatcher` lists the Jobs matching the instance's label selector, then watches from
the list's resourceVersion, resuming from the last version it saw after a disconnect or a
server-side timeout, and relisting after ``410 Gone``.  If the watch keeps failing (an API
server that refuses watches, a proxy that cuts streams) each retry starts with a relist, so
the cache degrades to a batched poll with backoff instead of going stale.  The backend reads
the cache (:class:`JobCache`) without any API request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3

from backends.kubernetes.api import KubeApi, KubeApiError, iter_lines
from backends.kubernetes.states import JobRecord

log = logging.getLogger(__name__)
MAX_RETRY_WAIT_S = 30.0


@dataclass(frozen=True)
class Entry:
    """A cached Job: its last known record, whether it is gone, when it was first seen."""

    record: JobRecord
    deleted: bool
    updated: float
    first_seen: float


class JobCache:
    """Thread-safe Job name -> :class:`Entry`; forgotten names ignore later events."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._forgotten: set[str] = set()

    def get(self, name: str) -> Entry | None:
        with self._lock:
            return self._entries.get(name)

    def put(self, obj: Mapping[str, Any], *, only_new: bool = False) -> None:
        """Store a Job object (``only_new``: unless the name is already known)."""
        record = JobRecord.from_object(obj)
        with self._lock:
            if record.name in self._forgotten:
                return
            old = self._entries.get(record.name)
            if only_new and old is not None:
                return
            now = self._clock()
            first = old.first_seen if old is not None else now
            self._entries[record.name] = Entry(record, False, now, first)

    def delete(self, obj: Mapping[str, Any]) -> None:
        """The Job is gone: keep its last state as a tombstone (a forgotten name is dropped)."""
        record = JobRecord.from_object(obj)
        with self._lock:
            if record.name in self._forgotten:
                self._forgotten.discard(record.name)
                return
            old = self._entries.get(record.name)
            now = self._clock()
            first = old.first_seen if old is not None else now
            self._entries[record.name] = Entry(record, True, now, first)

    def replace(self, objs: list[dict[str, Any]], since: float) -> None:
        """A fresh list: store every object; names unchanged since ``since`` and absent are
        marked deleted (they vanished while nobody watched)."""
        listed = set()
        for obj in objs:
            self.put(obj)
            listed.add(str((obj.get("metadata") or {}).get("name")))
        with self._lock:
            for name, entry in list(self._entries.items()):
                if name not in listed and not entry.deleted and entry.updated < since:
                    self._entries[name] = Entry(entry.record, True, self._clock(), entry.first_seen)

    def forget(self, name: str) -> None:
        """Drop a Job the backend has finished with; later events about it are ignored."""
        with self._lock:
            entry = self._entries.pop(name, None)
            if entry is not None and not entry.deleted:
                self._forgotten.add(name)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist."""


class JobWatcher:
    """The background thread keeping a :class:`JobCache` in step with the API server."""

    def __init__(
        self,
        api: KubeApi,
        cache: JobCache,
        selector: str,
        *,
        timeout_s: int,
        backoff_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.cache = cache
        self.selector = selector
        self.timeout_s = timeout_s
        self.backoff_s = max(backoff_s, 0.05)
        self._clock = clock
        self.synced = threading.Event()
        self.resource_version = ""
        self.relists = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name="gb-k8s-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if not self.resource_version:
                    self._relist()
                self._watch_once()
                failures = 0
            except _Expired:
                self.resource_version = ""
            except (KubeApiError, OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
                if self._stop.is_set():
                    return
                if isinstance(exc, KubeApiError) and exc.status == 410:
                    self.resource_version = ""
                    continue
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Kubernetes Job watch interrupted (%s); resuming", self.last_error)
                self._stop.wait(min(self.backoff_s * 2 ** (failures - 1), MAX_RETRY_WAIT_S))
                if failures >= 3:
                    self.resource_version = ""  # fall back to a fresh list each retry

    def _relist(self) -> None:
        started = self._clock()
        items, version = self.api.list_jobs(self.selector)
        self.cache.replace(items, started)
        self.resource_version = version
        self.relists += 1
        self.synced.set()

    def _watch_once(self) -> None:
        response = self.api.watch_jobs(self.selector, self.resource_version, self.timeout_s)
        self._response = response
        self.reconnects += 1
        try:
            for line in iter_lines(response):
                if self._stop.is_set():
                    return
                self._apply(json.loads(line))
        finally:
            self._response = None
            with contextlib.suppress(Exception):
                response.release_conn()

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Expired
            raise KubeApiError(f"watch error {code}: {obj.get('message')}", code)
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            self.cache.put(obj)
        elif kind == "DELETED":
            self.cache.delete(obj)
        if version:
            self.resource_version = str(version)
