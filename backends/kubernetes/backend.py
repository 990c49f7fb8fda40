"""The Kubernetes backend: one ``batch/v1`` Job per gear run, watched rather than polled.

The external id of a task is its Job's name (:func:`~backends.kubernetes.manifest.job_name`)
in the site's namespace.  A background :class:`~backends.kubernetes.watch.JobWatcher`
keeps every Job of this broker instance in a cache, so :meth:`KubernetesBackend.status`
answers from memory; it talks to the API server only for ids the cache does not know (one
label-selector list per batch), for the pods of Jobs that just finished, started or wait
too long (one batched list at most every ``POD_LOOKUP_INTERVAL_S``), and for their logs.
Per job that is about two requests: create, and one log read or live log stream.

With ``staging = "s3"`` (:mod:`backends.kubernetes.s3stage`), :meth:`submit` first streams
the job's mounts to the staging bucket, and the first status call that sees the Job end
brings the outputs back into the job folder (within that call) before reporting it; the
staging objects are deleted once a Job is settled.

Kubernetes runs the OCI image itself: ``runtimes`` is empty and the runtime object the
broker passes to :meth:`submit`/:meth:`render` is ignored.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import yaml

from backends.base import Backend, BackendState, TaskStatus
from backends.errors import BackendError
from backends.kubernetes.api import KubeApi, KubeApiError
from backends.kubernetes.config import KubernetesSiteConfig
from backends.kubernetes.logs import LogStreams, log_path, write_log
from backends.kubernetes.manifest import (
    ANNOTATION_JOB_DIR,
    LABEL_JOB_ID,
    identity,
    job_manifest,
    job_name,
    staged_digest,
)
from backends.kubernetes.s3pod import STAGE_IN, STAGE_OUT
from backends.kubernetes.s3stage import S3Staging
from backends.kubernetes.states import (
    STUCK_REASONS,
    JobRecord,
    PodInfo,
    final_status,
    latest_pods,
    pending_reason,
)
from backends.kubernetes.watch import JobCache, JobWatcher
from broker.runtimes.base import ContainerRuntime
from broker.task import TaskSpec

_NAME = re.compile(r"^gb-job-(\d+)-\d+-[0-9a-f]{8}$")
#: Job ids per label-selector list (keeps request URLs short).
SELECTOR_BATCH = 100
#: Finished statuses remembered for ids the dispatcher may ask about again.
FINAL_KEEP = 10_000
#: Pods are looked up at most this often, so Jobs ending close together share one list.
POD_LOOKUP_INTERVAL_S = 1.0
#: How long a finishing job waits for its live log stream to reach the end.
STREAM_GRACE_S = 5.0


class KubernetesBackend(Backend):
    """Runs TaskSpecs as Kubernetes Jobs on a shared PVC (see the module docstring)."""

    name: ClassVar[str] = "kubernetes"
    runtimes: ClassVar[frozenset[str] | None] = frozenset()

    def __init__(
        self,
        site: KubernetesSiteConfig,
        *,
        api: KubeApi | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.site = site
        self._api = api
        self._clock = clock
        self._lock = threading.RLock()
        self.cache = JobCache(clock)
        self._watcher: JobWatcher | None = None
        self._streams: LogStreams | None = None
        self._final: OrderedDict[str, TaskStatus] = OrderedDict()
        self._cancelled: set[str] = set()
        self._running: set[str] = set()
        self._last_lookup = -POD_LOOKUP_INTERVAL_S
        self.staging = S3Staging(site) if site.staging == "s3" else None

    # -- connections ---------------------------------------------------------------------
    @property
    def api(self) -> KubeApi:
        with self._lock:
            if self._api is None:
                self._api = KubeApi(self.site)
            return self._api

    @property
    def watcher(self) -> JobWatcher:
        """The running watch (started on first use)."""
        with self._lock:
            if self._watcher is None:
                self._watcher = JobWatcher(
                    self.api,
                    self.cache,
                    self.site.selector,
                    timeout_s=self.site.watch_timeout_s,
                    backoff_s=self.site.retry_backoff_s,
                    clock=self._clock,
                )
                self._watcher.start()
            return self._watcher

    @property
    def streams(self) -> LogStreams:
        with self._lock:
            if self._streams is None:
                self._streams = LogStreams(self.api, self.site.log_streams)
            return self._streams

    # -- submission ----------------------------------------------------------------------
    def manifest(self, task: TaskSpec) -> dict[str, Any]:
        """The Job object for ``task`` (the image pinned by the staged manifest's digest)."""
        urls = None
        if self.staging is not None:
            urls = self.staging.urls(job_name(task.key, task.job_dir))
        return job_manifest(task, self.site, staged_digest(task.job_dir), urls)

    def render(self, task: TaskSpec, runtime: ContainerRuntime) -> str:
        return yaml.safe_dump(self.manifest(task), sort_keys=False)

    def submit(self, task: TaskSpec, runtime: ContainerRuntime) -> str:
        """Create the Job; a Job of the same name for the same job folder is adopted."""
        manifest = self.manifest(task)
        name = manifest["metadata"]["name"]
        if self.staging is not None:
            self.staging.upload(task, name)
        else:
            self._hand_over(task)
        self.watcher  # noqa: B018  (watch before creating, so no event is missed)
        try:
            created = self.api.create_job(manifest)
        except KubeApiError as exc:
            if exc.status != 409:
                raise
            existing = self.api.get_job(name)
            if existing is None or not self._ours(existing, task.job_dir):
                raise BackendError(
                    f"a Job named {name} already exists in namespace {self.site.namespace} "
                    "and does not belong to this job folder"
                ) from exc
            created = existing
        self.cache.put(created, only_new=True)
        return str(name)

    def _hand_over(self, task: TaskSpec) -> None:
        """Make the writable mounts (output/, work/) and logs/ the pod user's: the pod runs
        as the site's non-root uid, which may differ from the owner the staging chose."""
        uid, gid = identity(task, self.site)
        if os.getuid() != 0:
            return  # only root can give files away; a non-root broker runs pods as itself
        writable = [Path(m.source) for m in task.container.mounts if not m.read_only]
        for folder in [*writable, Path(task.job_dir) / "logs"]:
            if folder.is_dir():
                os.chown(folder, uid, gid)

    def _ours(self, obj: dict[str, Any], job_dir: str) -> bool:
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        return bool(annotations.get(ANNOTATION_JOB_DIR) == str(Path(job_dir).absolute()))

    def find(self, job_dir: str, key: str) -> str | None:
        name = job_name(key, job_dir)
        existing = self.api.get_job(name)
        return name if existing is not None and self._ours(existing, job_dir) else None

    # -- monitoring ----------------------------------------------------------------------
    def status(self, ids: Sequence[str]) -> list[TaskStatus]:
        """Statuses from the watch cache; API requests only for what the cache cannot say."""
        with self._lock:
            watcher = self.watcher
            watcher.synced.wait(self.site.request_timeout_s)
            unknown = [i for i in ids if i not in self._final and self.cache.get(i) is None]
            if unknown:
                self._lookup(unknown)
            finishing: list[str] = []
            waiting: list[str] = []
            starting: list[str] = []
            for external_id in dict.fromkeys(ids):
                if external_id not in self._final:
                    self._sort(external_id, finishing, waiting, starting)
            del starting[self.streams.room() :]
            if finishing or waiting or starting:
                self._resolve(finishing, waiting, starting)
            return [self._final.get(i) or self._current(i) for i in ids]

    def _resolve(self, finishing: list[str], waiting: list[str], starting: list[str]) -> None:
        """Settle what the pods decide, from one batched pod list (at most one per interval)."""
        if self._clock() - self._last_lookup < POD_LOOKUP_INTERVAL_S:
            return
        self._last_lookup = self._clock()
        try:
            pods = self._pods([*finishing, *waiting, *starting])
        except KubeApiError:
            return  # settle nothing without the pods' facts; the next call retries
        for name in finishing:
            self._finish(name, pods.get(name))
        for name in waiting:
            self._check_waiting(name, pods.get(name))
        for name in starting:
            self._start_stream(name, pods.get(name))

    def _sort(
        self, name: str, finishing: list[str], waiting: list[str], starting: list[str]
    ) -> None:
        """Settle what the cache alone decides; queue the rest by the pod facts it needs."""
        entry = self.cache.get(name)
        if entry is None:
            if name in self._cancelled:
                self._settle(name, self._cancel_status(name, "the Job is gone"))
            else:
                self._settle(name, self._missing(name))
            return
        state = entry.record.state
        if state.terminal:
            finishing.append(name)
        elif entry.deleted:
            self._settle(name, self._cancel_status(name, None))
        elif state is BackendState.RUNNING or name in self._running:
            self._running.add(name)  # a pod past its gear (uploading) is not ready: still RUNNING
            if self.streams.wanted(name):
                starting.append(name)
        elif self._clock() - entry.first_seen > self.site.pending_timeout_s:
            waiting.append(name)

    def _current(self, name: str) -> TaskStatus:
        entry = self.cache.get(name)
        assert entry is not None
        state = entry.record.state
        running = state is BackendState.RUNNING or state.terminal or name in self._running
        state = BackendState.RUNNING if running else BackendState.PENDING
        return TaskStatus(name, state, started=entry.record.started if running else None)

    def _lookup(self, names: Sequence[str]) -> None:
        """One label-selector list per batch of unknown ids; found Jobs enter the cache."""
        for obj in self._list("jobs", names):
            self.cache.put(obj, only_new=True)

    def _list(self, kind: str, names: Sequence[str]) -> list[dict[str, Any]]:
        ids = sorted({m.group(1) for n in names if (m := _NAME.match(n))}, key=int)
        items: list[dict[str, Any]] = []
        for start in range(0, len(ids), SELECTOR_BATCH):
            chunk = ",".join(ids[start : start + SELECTOR_BATCH])
            selector = f"{self.site.selector},{LABEL_JOB_ID} in ({chunk})"
            if kind == "jobs":
                items += self.api.list_jobs(selector)[0]
            else:
                items += self.api.list_pods(selector)
        wanted = set(names)
        if kind == "jobs":
            return [o for o in items if (o.get("metadata") or {}).get("name") in wanted]
        return items

    def _pods(self, names: Sequence[str]) -> dict[str, PodInfo]:
        pods = latest_pods(self._list("pods", names))
        return {name: pod for name, pod in pods.items() if name in set(names)}

    def _finish(self, name: str, pod: PodInfo | None) -> None:
        entry = self.cache.get(name)
        assert entry is not None
        record = entry.record
        self._store_log(name, record, pod)
        status = final_status(name, record, pod, deleted=entry.deleted)
        if self.staging is not None and record.job_dir and record.output_path:
            collected = self.staging.finish(
                name, record.job_dir, record.output_path, status, lambda: self._stager_log(pod)
            )
            if collected is None:
                return  # the bucket failed: the next status call tries again
            status = collected
        self._settle(name, status)

    def _stager_log(self, pod: PodInfo | None) -> bytes:
        """The log of the container that failed to stage (in or out), for the job log."""
        if pod is None:
            return b""
        container = STAGE_IN if pod.init_failure else STAGE_OUT
        try:
            return self.api.pod_log(pod.name, 64 * 1024, container=container)
        except KubeApiError as exc:
            return f"[gearbroker: the log of {container} could not be read: {exc}]\n".encode()

    def _store_log(self, name: str, record: JobRecord, pod: PodInfo | None) -> None:
        if record.job_dir is None:
            return
        path = log_path(record.job_dir)
        if self.streams.finish(name, STREAM_GRACE_S) or pod is None:
            return
        try:
            data = self.api.pod_log(pod.name, record.log_limit)
        except KubeApiError as exc:
            data = f"[gearbroker: the log of pod {pod.name} could not be read: {exc}]\n".encode()
        try:
            write_log(path, data, record.log_limit)
        except OSError as exc:
            raise BackendError(f"cannot write the log of Job {name} to {path}: {exc}") from exc

    def _check_waiting(self, name: str, pod: PodInfo | None) -> None:
        """A Job pending past ``pending_timeout_s``: running after all, or failed and deleted."""
        if pod is not None and pod.phase != "Pending" and pod.waiting_reason not in STUCK_REASONS:
            self._running.add(name)
            return
        why = pending_reason(pod)
        if why is None:
            why = "no pod was created" if pod is None else f"pod {pod.name} is still Pending"
        message = f"did not start within {self.site.pending_timeout_s:g} s: {why}"
        entry = self.cache.get(name)
        assert entry is not None
        if entry.record.job_dir is not None:
            note = f"[gearbroker: {message}]\n".encode()
            with contextlib.suppress(OSError):  # the status message carries the same words
                write_log(log_path(entry.record.job_dir), note, None)
        try:
            self.api.delete_job(name)
        except KubeApiError:
            return  # it must not start later unseen: try again on the next call
        self._cancelled.add(name)
        self._settle(name, TaskStatus(name, BackendState.FAILED, message=message))

    def _start_stream(self, name: str, pod: PodInfo | None) -> None:
        entry = self.cache.get(name)
        if pod is None or entry is None or entry.record.job_dir is None:
            return
        self.streams.start(name, pod.name, log_path(entry.record.job_dir), entry.record.log_limit)

    def _settle(self, name: str, status: TaskStatus) -> None:
        self._final[name] = status
        while len(self._final) > FINAL_KEEP:
            self._final.popitem(last=False)
        self.cache.forget(name)
        if self.staging is not None:
            self.staging.cleanup(name)
        if self._streams is not None and self._streams.has(name):
            self._streams.finish(name, 1.0)
        self._running.discard(name)

    def _cancel_status(self, name: str, detail: str | None) -> TaskStatus:
        if name in self._cancelled:
            words = "cancelled through gearbroker"
        else:
            words = "cancelled externally: the Job was deleted outside gearbroker"
        if detail:
            words += f" ({detail})"
        return TaskStatus(name, BackendState.CANCELLED, message=words)

    def _missing(self, name: str) -> TaskStatus:
        return TaskStatus(
            name,
            BackendState.MISSING,
            message=(
                f"Kubernetes has no Job {name} in namespace {self.site.namespace}: it was "
                "deleted (ttlSecondsAfterFinished, or by someone) before the broker saw it end"
            ),
        )

    # -- cancellation --------------------------------------------------------------------
    def cancel(self, ids: Sequence[str]) -> list[bool]:
        """Delete each unfinished Job (``propagationPolicy: Background``)."""
        done = []
        with self._lock:
            for name in ids:
                entry = self.cache.get(name)
                if name in self._final or (entry is not None and entry.record.state.terminal):
                    done.append(False)
                    continue
                self._cancelled.add(name)
                done.append(self.api.delete_job(name))
        return done

    def close(self) -> None:
        with self._lock:
            watcher, streams, api = self._watcher, self._streams, self._api
            self._watcher = self._streams = None
        if watcher is not None:
            watcher.stop()
        if streams is not None:
            streams.close()
        if api is not None:
            api.close()
