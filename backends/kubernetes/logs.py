"""Pod logs into ``<job_dir>/logs/output.log``: streamed live while a pod runs, read at the end.

:class:`LogStreams` follows at most ``limit`` running pods at once, each in a daemon thread
appending to the job's log file as chunks arrive (what ``gearbroker jobs logs --follow``
tails).  A stream that reaches the end of the log (the container exited) is complete; for
any other job :func:`write_log` stores the whole log (up to the job's limit) in one read
when it finishes, replacing the file atomically, so the kept log is never partial.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import urllib3

from backends.kubernetes.api import KubeApi, KubeApiError

CHUNK = 64 * 1024
LOG_FILE = Path("logs") / "output.log"
#: Streams started per job at most (a stream breaks off after a long silence or a cut).
MAX_ATTEMPTS = 3


def log_path(job_dir: str) -> Path:
    return Path(job_dir) / LOG_FILE


def truncation_note(limit: int | None, size: int) -> bytes:
    if limit is not None and size >= limit:
        return f"\n[gearbroker: log truncated at {limit} bytes]\n".encode()
    return b""


def write_log(path: Path, data: bytes, limit: int | None) -> None:
    """Replace ``path`` with ``data`` (plus a note when the limit cut it) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data + truncation_note(limit, len(data)))
    os.replace(tmp, path)


class _Stream:
    def __init__(self, api: KubeApi, pod: str, path: Path, limit: int | None) -> None:
        self.api = api
        self.pod = pod
        self.path = path
        self.limit = limit
        self.complete = False
        self.stopped = False
        self.response: Any = None
        self.thread = threading.Thread(target=self.run, name=f"gb-k8s-log-{pod}", daemon=True)

    def run(self) -> None:
        try:
            self.response = self.api.follow_pod_log(self.pod, self.limit)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            size = 0
            with self.path.open("wb") as fh:
                for chunk in self.response.stream(CHUNK, decode_content=False):
                    fh.write(chunk)
                    fh.flush()
                    size += len(chunk)
                fh.write(truncation_note(self.limit, size))
            self.complete = not self.stopped
        except (KubeApiError, OSError, urllib3.exceptions.HTTPError):
            self.complete = False
        finally:
            if self.response is not None:
                with contextlib.suppress(Exception):
                    self.response.release_conn()

    def stop(self) -> None:
        self.stopped = True
        if self.response is not None:
            with contextlib.suppress(Exception):
                self.response.shutdown()


class LogStreams:
    """Live log streams by Job name, at most ``limit`` running at once."""

    def __init__(self, api: KubeApi, limit: int) -> None:
        self.api = api
        self.limit = limit
        self._streams: dict[str, _Stream] = {}
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()

    def start(self, job: str, pod: str, path: Path, limit_bytes: int | None) -> bool:
        """Follow ``pod``'s log into ``path`` (again, if an earlier stream broke off); False
        when ``limit`` streams are running."""
        with self._lock:
            if self._running() >= self.limit:
                return False
            stream = _Stream(self.api, pod, path, limit_bytes)
            self._streams[job] = stream
            self._attempts[job] = self._attempts.get(job, 0) + 1
        stream.thread.start()
        return True

    def _running(self) -> int:
        return sum(1 for s in self._streams.values() if s.thread.is_alive())

    def room(self) -> int:
        """How many more streams may start now."""
        with self._lock:
            return max(self.limit - self._running(), 0)

    def wanted(self, job: str) -> bool:
        """Whether ``job`` has no stream yet, or one that broke off (at most MAX_ATTEMPTS)."""
        with self._lock:
            stream = self._streams.get(job)
            if self._attempts.get(job, 0) >= MAX_ATTEMPTS:
                return False
        return stream is None or (not stream.thread.is_alive() and not stream.complete)

    def has(self, job: str) -> bool:
        with self._lock:
            return job in self._streams

    def finish(self, job: str, timeout: float) -> bool:
        """Wait up to ``timeout`` for ``job``'s stream; True when it captured the whole log."""
        with self._lock:
            stream = self._streams.pop(job, None)
            self._attempts.pop(job, None)
        if stream is None:
            return False
        stream.thread.join(timeout)
        if stream.thread.is_alive():
            stream.stop()
            stream.thread.join(1.0)
            return False
        return stream.complete

    def close(self) -> None:
        with self._lock:
            streams = list(self._streams.values())
            self._streams.clear()
            self._attempts.clear()
        for stream in streams:
            stream.stop()
        for stream in streams:
            stream.thread.join(1.0)
