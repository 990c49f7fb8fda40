"""Runs each Job's pod as a real Podman container, as a kubelet would, and reports the outcome.

The pod's container becomes a :class:`~broker.task.ContainerSpec` run by the project's
:class:`~broker.runtimes.podman.PodmanRuntime`: ``command`` with Kubernetes' ``$(VAR)``
expansion, env, working dir, ``runAsUser:runAsGroup``, ``limits.cpu``/``limits.memory``,
and each PVC ``subPath`` mount bound from ``<volume root>/<subPath>``.  Podman runs in a
per-pod folder, where conmon leaves its ``oom`` marker (podman 4 never sets OOMKilled).
Pods wait for one of ``slots`` runners, like pods waiting for room on a node.  A pod that
cannot start (unschedulable, missing claim or image, root user) stays Pending with the
reason a real cluster gives.
"""

from __future__ import annotations

import contextlib
import math
import queue
import re
import subprocess
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.runtimes.podman import PodmanRuntime
from broker.task import ContainerSpec, Mount, Resources
from broker.transport import LocalTransport
from tests.k8s_api.cluster import JOBS, PODS, ApiError, Cluster, now_iso

_QUANTITY = re.compile(r"^([0-9.]+)([A-Za-z]*)$")
_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip
TRANSPORT = LocalTransport()


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: ``$$`` is ``$``; unknown references stay as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            end = text.find(")", i + 2)
            if text[i + 1] == "(" and end != -1:
                name = text[i + 2 : end]
                out.append(env.get(name, text[i : end + 1]))
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def quantity(text: str) -> float:
    """A resource quantity (``500m``, ``64Mi``, ``2``) as a number of units."""
    if text.endswith("m") and text[:-1].replace(".", "").isdigit():
        return float(text[:-1]) / 1000
    match = _QUANTITY.match(text)
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"invalid quantity {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


class Blocked(Exception):
    """The pod cannot start: ``status`` is the pod status to publish."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(str(status))
        self.status = status


def unschedulable(message: str) -> Blocked:
    condition = {
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastTransitionTime": now_iso(),
    }  # fmt: skip
    return Blocked({"phase": "Pending", "conditions": [condition]})


def waiting(reason: str, message: str) -> Blocked:
    state = {"waiting": {"reason": reason, "message": message}}
    scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_iso()}
    return Blocked(
        {
            "phase": "Pending",
            "conditions": [scheduled],
            "containerStatuses": [
                {
                    "name": "gear",
                    "ready": False,
                    "restartCount": 0,
                    "state": state,
                    "image": "",
                    "imageID": "",
                },
            ],
        }
    )


class PodRunner:
    """Starts pods for new Jobs and runs them on ``slots`` Podman workers."""

    def __init__(
        self,
        cluster: Cluster,
        runtime: PodmanRuntime,
        volumes: Mapping[str, Path],
        work_dir: Path,
        slots: int = 4,
    ) -> None:
        self.cluster = cluster
        self.runtime = runtime
        self.volumes = dict(volumes)
        self.work_dir = work_dir
        self.logs: dict[tuple[str, str], Path] = {}
        self.finished: set[tuple[str, str]] = set()
        self._images: dict[str, bool] = {}
        self._queue: queue.Queue[tuple[str, str, str] | None] = queue.Queue()
        self._running: dict[tuple[str, str], ContainerSpec] = {}
        self._deleted: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._workers = [
            threading.Thread(target=self._work, name=f"k8s-test-kubelet-{i}", daemon=True)
            for i in range(slots)
        ]
        for worker in self._workers:
            worker.start()
        self._removals: queue.Queue[ContainerSpec | None] = queue.Queue()
        self._remover = threading.Thread(target=self._remove, name="k8s-test-rm", daemon=True)
        self._remover.start()
        cluster.on_job_created = self.job_created
        cluster.on_pod_deleted = self.pod_deleted

    # -- scheduling ----------------------------------------------------------------
    def job_created(self, namespace: str, name: str) -> None:
        pod = self.cluster.create_pod(namespace, name)
        if pod is None:
            return
        pod_name = pod["metadata"]["name"]
        key = (namespace, pod_name)
        self.logs[key] = self.work_dir / "pods" / pod_name / "log"
        try:
            reason = self.cluster.unschedulable(self.cluster.get(JOBS, namespace, name))
            if reason:
                raise unschedulable(reason)
            self._spec(pod)
        except Blocked as blocked:
            self.cluster.update_pod_status(namespace, pod_name, **blocked.status)
            return
        except ApiError:
            return
        self._queue.put((namespace, pod_name, name))

    def pod_deleted(self, namespace: str, pod_name: str) -> None:
        with self._lock:
            self._deleted.add((namespace, pod_name))

    def _spec(self, pod: Mapping[str, Any]) -> ContainerSpec:
        """The pod's container as a ContainerSpec; Blocked when a kubelet could not start it."""
        spec = pod["spec"]
        container = spec["containers"][0]
        volumes = {v["name"]: v for v in spec.get("volumes") or ()}
        mounts = []
        for vm in container.get("volumeMounts") or ():
            claim = (volumes.get(vm["name"]) or {}).get("persistentVolumeClaim") or {}
            root = self.volumes.get(claim.get("claimName", ""))
            if root is None:
                raise unschedulable(
                    f'0/1 nodes are available: persistentvolumeclaim "{claim.get("claimName")}" '
                    "not found."
                )
            source = root / vm.get("subPath", "")
            mounts.append(Mount(str(source), vm["mountPath"], bool(vm.get("readOnly"))))
        security = {
            **(spec.get("securityContext") or {}),
            **(container.get("securityContext") or {}),
        }
        uid, gid = security.get("runAsUser"), security.get("runAsGroup")
        if security.get("runAsNonRoot") and not uid:
            raise waiting(
                "CreateContainerConfigError",
                "container has runAsNonRoot and image will run as root",
            )
        env: dict[str, str] = {}
        for item in container.get("env") or ():
            env[item["name"]] = expand(item.get("value", ""), env)
        limits = (container.get("resources") or {}).get("limits") or {}
        memory = limits.get("memory")
        image = container["image"]
        if not self._image_present(image):
            raise waiting("ImagePullBackOff", f'Back-off pulling image "{image}": not found')
        return ContainerSpec(
            name=pod["metadata"]["name"],
            image=image,
            argv=[expand(arg, env) for arg in container["command"]],
            mounts=mounts,
            env=env,
            workdir=container.get("workingDir") or "/",
            user=f"{uid}:{gid if gid is not None else uid}" if uid else None,
            resources=Resources(
                cpus=quantity(limits["cpu"]) if "cpu" in limits else 0.0,
                memory_mb=math.ceil(quantity(memory) / 2**20) if memory else None,
            ),
        )

    def _image_present(self, image: str) -> bool:
        if image not in self._images:
            done = TRANSPORT.run(self.runtime.cli("image", "exists", image), check=False)
            self._images[image] = done.returncode == 0
        return self._images[image]

    # -- running -------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            with contextlib.suppress(ApiError):  # the Job or pod was deleted meanwhile
                self._run(*item)

    def _remove(self) -> None:
        """Remove exited containers off the pods' critical path."""
        while (spec := self._removals.get()) is not None:
            TRANSPORT.run(self.runtime.remove_argv(spec), check=False, timeout=60)

    def _run(self, namespace: str, pod_name: str, job_name: str) -> None:
        key = (namespace, pod_name)
        pod = self.cluster.get(PODS, namespace, pod_name)
        job = self.cluster.get(JOBS, namespace, job_name)
        spec = self._spec(pod)
        folder = self.work_dir / "pods" / pod_name
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if key in self._deleted:
                return
            self._running[key] = spec
        started = now_iso()
        running = {"running": {"startedAt": started}}
        self.cluster.update_pod_status(
            namespace, pod_name, phase="Running", startTime=started,
            conditions=[{"type": "Ready", "status": "True"}],
            containerStatuses=[{"name": "gear", "ready": True, "restartCount": 0,
                                "state": running, "image": spec.image, "imageID": ""}],
        )  # fmt: skip
        self.cluster.update_job_status(namespace, job_name, ready=1)
        deadline = job["spec"].get("activeDeadlineSeconds")
        with self.logs[key].open("wb") as log:
            proc = subprocess.Popen(
                self.runtime.argv(spec), cwd=folder, stdout=log, stderr=subprocess.STDOUT
            )
            code, timed_out = self._wait(proc, key, spec, self._remaining(job, deadline))
        oom = code == 137 and self.runtime.oom_killed(spec, TRANSPORT, cwd=str(folder))
        self._removals.put(spec)
        with self._lock:
            self._running.pop(key, None)
            self.finished.add(key)
            if key in self._deleted:
                return
        self._report(namespace, pod_name, job, spec, started, code, oom, timed_out)

    def _wait(
        self,
        proc: subprocess.Popen[bytes],
        key: tuple[str, str],
        spec: ContainerSpec,
        remaining: float | None,
    ) -> tuple[int, bool]:
        """(exit code, deadline hit): the container is killed when its pod is deleted."""
        end = None if remaining is None else time.monotonic() + remaining
        late = False
        killed = 0.0
        while True:
            try:
                return proc.wait(timeout=0.1), late
            except subprocess.TimeoutExpired:
                late = late or (end is not None and time.monotonic() > end)
                if (late or key in self._deleted) and time.monotonic() - killed > 1.0:
                    TRANSPORT.run(self.runtime.cli("kill", spec.name), check=False, timeout=60)
                    killed = time.monotonic()

    @staticmethod
    def _remaining(job: Mapping[str, Any], deadline: int | None) -> float | None:
        if deadline is None:
            return None
        start = datetime.fromisoformat(job["status"]["startTime"].replace("Z", "+00:00"))
        return max(deadline - (time.time() - start.timestamp()), 0.1)

    def _report(
        self,
        namespace: str,
        pod_name: str,
        job: Mapping[str, Any],
        spec: ContainerSpec,
        started: str,
        code: int,
        oom: bool,
        timed_out: bool,
    ) -> None:
        name = job["metadata"]["name"]
        reason = "OOMKilled" if oom else "Completed" if code == 0 else "Error"
        terminated = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": now_iso(),
        }
        pod_status: dict[str, Any] = {
            "phase": "Succeeded" if code == 0 and not timed_out else "Failed",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "gear", "ready": False, "restartCount": 0,
                                   "state": {"terminated": terminated}, "image": spec.image,
                                   "imageID": ""}],
        }  # fmt: skip
        if timed_out:
            pod_status.update(reason="DeadlineExceeded", message="Pod was active too long")
        self.cluster.update_pod_status(namespace, pod_name, **pod_status)
        condition: tuple[str, str | None, str | None]
        if timed_out:
            condition = (
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            )
        elif code == 0:
            condition = ("Complete", None, None)
        else:
            condition = (
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
        kind, why, message = condition
        cond = {"type": kind, "status": "True", "lastProbeTime": now_iso(),
                "lastTransitionTime": now_iso()}  # fmt: skip
        if why and message:
            cond.update(reason=why, message=message)
        counts = {"succeeded": 1} if kind == "Complete" else {"failed": 1}
        extra = {"completionTime": now_iso()} if kind == "Complete" else {}
        self.cluster.update_job_status(
            namespace, name, active=0, ready=0, conditions=[cond], **counts, **extra
        )
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is not None and ttl < 600:
            timer = threading.Timer(ttl, self._expire, (namespace, name))
            timer.daemon = True
            timer.start()
            self._timers.append(timer)

    def _expire(self, namespace: str, name: str) -> None:
        with contextlib.suppress(ApiError):
            self.cluster.delete_job(namespace, name, "Background")

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        with self._lock:
            running = list(self._running.values())
        for spec in running:
            TRANSPORT.run(self.runtime.cli("kill", spec.name), check=False, timeout=60)
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout=30)
        self._removals.put(None)
        self._remover.join(timeout=120)
