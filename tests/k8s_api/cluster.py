"""The test API server's state: Jobs and pods, resourceVersions, the watch history, faults.

Every change bumps one global resourceVersion and appends a (version, resource, type,
object copy) event to the history that watches replay.  :meth:`Cluster.compact` drops the
history, so a watch resumed from an older version gets ``410 Gone``, as after etcd
compaction.  A Job's pod goes through the :class:`~tests.k8s_api.podman.PodRunner`.
"""

from __future__ import annotations

import copy
import secrets
import string
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.k8s_api.selectors import parse_selector

JOBS = "jobs"
PODS = "pods"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An API error answer: HTTP status, Kubernetes reason, message."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass(frozen=True)
class Event:
    version: int
    resource: str
    namespace: str
    type: str
    obj: dict[str, Any]


class Cluster:
    """Objects, history and the knobs tests turn (all under one condition variable)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.version = 1
        self.oldest = 1  # watches from before this version get 410 Gone
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.history: list[Event] = []
        self.versions: list[int] = []  # of the history, for bisection
        self.deletions: list[tuple[str, str]] = []  # (job name, propagation policy)
        self.unschedulable: Callable[[Mapping[str, Any]], str | None] = lambda job: None
        self.on_job_created: Callable[[str, str], None] = lambda ns, name: None
        self.on_pod_deleted: Callable[[str, str], None] = lambda ns, name: None

    # -- versions and events -------------------------------------------------------
    def _record(self, resource: str, namespace: str, kind: str, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.history.append(Event(self.version, resource, namespace, kind, copy.deepcopy(obj)))
        self.versions.append(self.version)
        self.cond.notify_all()

    def compact(self) -> None:
        """Forget the history up to a write no watch has seen: every watch resumed from an
        earlier version gets 410 Gone (cut the open ones with ``KubeTestServer.cut_watches``)."""
        with self.cond:
            self.version += 1
            self.history.clear()
            self.versions.clear()
            self.oldest = self.version + 1

    # -- reads ---------------------------------------------------------------------
    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        with self.cond:
            store = self.jobs if resource == JOBS else self.pods
            obj = store.get((namespace, name))
            if obj is None:
                kind = "jobs.batch" if resource == JOBS else "pods"
                raise ApiError(404, "NotFound", f'{kind} "{name}" not found')
            return copy.deepcopy(obj)

    def list(
        self, resource: str, namespace: str, selector: str | None
    ) -> tuple[list[dict[str, Any]], int]:
        match = parse_selector(selector)
        with self.cond:
            store = self.jobs if resource == JOBS else self.pods
            items = [
                copy.deepcopy(o)
                for (ns, _), o in sorted(store.items())
                if ns == namespace and match(o["metadata"].get("labels") or {})
            ]
            return items, self.version

    # -- jobs ----------------------------------------------------------------------
    def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", "Job.batch is invalid: metadata.name: Required value")
        with self.cond:
            if (namespace, name) in self.jobs:
                raise ApiError(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
            meta.update(
                namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now_iso(),
                generation=1,
            )  # fmt: skip
            body["status"] = {}
            self.jobs[(namespace, name)] = body
            self._record(JOBS, namespace, "ADDED", body)
            result = copy.deepcopy(body)
        self.on_job_created(namespace, name)
        return result

    def update_job_status(self, namespace: str, name: str, **status: Any) -> bool:
        """Merge ``status`` into the Job's; False when the Job is gone."""
        with self.cond:
            job = self.jobs.get((namespace, name))
            if job is None:
                return False
            job["status"].update(status)
            self._record(JOBS, namespace, "MODIFIED", job)
            return True

    def delete_job(self, namespace: str, name: str, propagation: str) -> dict[str, Any]:
        with self.cond:
            job = self.jobs.pop((namespace, name), None)
            if job is None:
                raise ApiError(404, "NotFound", f'jobs.batch "{name}" not found')
            self.deletions.append((name, propagation))
            job["metadata"]["deletionTimestamp"] = now_iso()
            self._record(JOBS, namespace, "DELETED", job)
            pods = [
                key
                for key, pod in self.pods.items()
                if key[0] == namespace and pod["metadata"]["labels"].get("job-name") == name
            ]
            if propagation != "Orphan":
                for key in pods:
                    pod = self.pods.pop(key)
                    pod["metadata"]["deletionTimestamp"] = now_iso()
                    self._record(PODS, namespace, "DELETED", pod)
        if propagation != "Orphan":
            for _, pod_name in pods:
                self.on_pod_deleted(namespace, pod_name)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Success",
            "details": {
                "name": name,
                "group": "batch",
                "kind": "jobs",
                "uid": job["metadata"]["uid"],
            },
        }

    # -- pods ----------------------------------------------------------------------
    def create_pod(self, namespace: str, job_name: str) -> dict[str, Any] | None:
        """The Job's pod (Pending); None when the Job is gone."""
        with self.cond:
            job = self.jobs.get((namespace, job_name))
            if job is None:
                return None
            template = job["spec"]["template"]
            suffix = "".join(
                secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5)
            )
            labels = dict((template.get("metadata") or {}).get("labels") or {})
            labels.update({"job-name": job_name, "batch.kubernetes.io/job-name": job_name})
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{job_name}-{suffix}",
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": now_iso(),
                    "labels": labels,
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": job_name,
                            "uid": job["metadata"]["uid"],
                            "controller": True,
                        },
                    ],
                },
                "spec": copy.deepcopy(template["spec"]),
                "status": {"phase": "Pending"},
            }
            self.pods[(namespace, pod["metadata"]["name"])] = pod
            self._record(PODS, namespace, "ADDED", pod)
            job["status"].update(active=1, ready=0, startTime=now_iso())
            self._record(JOBS, namespace, "MODIFIED", job)
            return copy.deepcopy(pod)

    def update_pod_status(self, namespace: str, name: str, **status: Any) -> bool:
        with self.cond:
            pod = self.pods.get((namespace, name))
            if pod is None:
                return False
            pod["status"].update(status)
            self._record(PODS, namespace, "MODIFIED", pod)
            return True
