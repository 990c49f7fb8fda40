"""Runs each Job's pod as real Podman containers, as a kubelet would, and reports the outcome.

:func:`~tests.k8s_api.podspec.plan_pod` turns the pod into ContainerSpecs run by the
project's :class:`~broker.runtimes.podman.PodmanRuntime`: the init containers one after the
other (a failing one fails the pod), then the app containers at once, sharing the pod's
``emptyDir`` folders; the containers other than ``gear`` get ``--network=host``.  Podman
runs in a per-container folder, where conmon leaves its ``oom`` marker (podman 4 never sets
OOMKilled).  Pods wait for one of ``slots`` runners, like pods waiting for room on a node.
A pod that cannot start (unschedulable, missing claim or image, root user) stays Pending
with the reason a real cluster gives.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.runtimes.podman import PodmanRuntime
from broker.task import ContainerSpec
from broker.transport import LocalTransport
from tests.k8s_api.cluster import JOBS, PODS, ApiError, Cluster, now_iso
from tests.k8s_api.podspec import GEAR, Blocked, PodPlan, plan_pod, unschedulable

TRANSPORT = LocalTransport()


@dataclass(frozen=True)
class Ended:
    """One container's run: its exit code and whether the memory limit killed it."""

    name: str
    spec: ContainerSpec
    started: str
    code: int
    oom: bool

    def status(self) -> dict[str, Any]:
        reason = "OOMKilled" if self.oom else "Completed" if self.code == 0 else "Error"
        terminated = {"exitCode": self.code, "reason": reason, "startedAt": self.started,
                      "finishedAt": now_iso()}  # fmt: skip
        return {"name": self.name, "ready": False, "restartCount": 0,
                "state": {"terminated": terminated}, "image": self.spec.image,
                "imageID": ""}  # fmt: skip


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
        self.host_runtime = PodmanRuntime(
            binary=runtime.binary,
            extra_args=[*runtime.extra_args, "--network=host"],
            env=runtime.env,
            pids_limit=runtime.pids_limit,
        )
        self.volumes = dict(volumes)
        self.work_dir = work_dir
        self.logs: dict[tuple[str, str], Path] = {}  # the gear container's log, by pod
        self.finished: set[tuple[str, str]] = set()
        self.done: set[tuple[str, str, str]] = set()  # (namespace, pod, container)
        self._images: dict[str, bool] = {}
        self._queue: queue.Queue[tuple[str, str, str] | None] = queue.Queue()
        self._running: dict[tuple[str, str], list[ContainerSpec]] = {}
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

    def log_path(self, namespace: str, pod: str, container: str) -> Path:
        """Where ``container``'s output goes (it exists once the container started)."""
        folder = self.work_dir / "pods" / pod
        return folder / "log" if container == GEAR else folder / f"{container}.log"

    # -- scheduling ----------------------------------------------------------------
    def job_created(self, namespace: str, name: str) -> None:
        pod = self.cluster.create_pod(namespace, name)
        if pod is None:
            return
        pod_name = pod["metadata"]["name"]
        key = (namespace, pod_name)
        self.logs[key] = self.log_path(namespace, pod_name, GEAR)
        try:
            reason = self.cluster.unschedulable(self.cluster.get(JOBS, namespace, name))
            if reason:
                raise unschedulable(reason)
            self._plan(pod)
        except Blocked as blocked:
            self.cluster.update_pod_status(namespace, pod_name, **blocked.status)
            return
        except ApiError:
            return
        self._queue.put((namespace, pod_name, name))

    def pod_deleted(self, namespace: str, pod_name: str) -> None:
        with self._lock:
            self._deleted.add((namespace, pod_name))

    def _plan(self, pod: Mapping[str, Any]) -> PodPlan:
        folder = self.work_dir / "pods" / pod["metadata"]["name"]
        return plan_pod(pod, self.volumes, folder, self._image_present)

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
        plan = self._plan(pod)
        (self.work_dir / "pods" / pod_name).mkdir(parents=True, exist_ok=True)
        for folder in plan.empty_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o777)
        with self._lock:
            if key in self._deleted:
                return
            self._running[key] = []
        remaining = self._remaining(job, job["spec"].get("activeDeadlineSeconds"))
        end = None if remaining is None else time.monotonic() + remaining
        inits: list[Ended] = []
        for name, spec in plan.init:
            ended, timed_out = self._execute(key, [(name, spec)], end)
            inits += ended
            if timed_out or ended[0].code != 0:
                if self._close_pod(key):
                    self._report_init(namespace, pod_name, job, plan, inits, timed_out)
                return
        for name, _ in plan.apps:  # logs can be read (empty) as soon as the pod runs
            self.log_path(namespace, pod_name, name).touch()
        started = now_iso()
        running = {"running": {"startedAt": started}}
        statuses = [{"name": n, "ready": True, "restartCount": 0, "state": running,
                     "image": s.image, "imageID": ""} for n, s in plan.apps]  # fmt: skip
        self.cluster.update_pod_status(
            namespace, pod_name, phase="Running", startTime=started,
            conditions=[{"type": "Ready", "status": "True"}], containerStatuses=statuses,
            initContainerStatuses=[e.status() for e in inits],
        )  # fmt: skip
        self.cluster.update_job_status(namespace, job_name, ready=1)
        apps, timed_out = self._execute(key, plan.apps, end)
        if self._close_pod(key):
            self._report(namespace, pod_name, job, inits, apps, timed_out)

    def _close_pod(self, key: tuple[str, str]) -> bool:
        """Mark the pod finished; False when it was deleted meanwhile (nothing to report)."""
        with self._lock:
            self._running.pop(key, None)
            self.finished.add(key)
            return key not in self._deleted

    def _execute(
        self, key: tuple[str, str], containers: list[tuple[str, ContainerSpec]], end: float | None
    ) -> tuple[list[Ended], bool]:
        """Run ``containers`` at once until all exit; (their ends, deadline hit)."""
        folder = self.work_dir / "pods" / key[1]
        procs = []
        for name, spec in containers:
            for mount in spec.mounts:
                if not Path(mount.source).exists() and folder in Path(mount.source).parents:
                    Path(mount.source).mkdir(parents=True, mode=0o777)  # an emptyDir subPath
            cwd = folder / name
            cwd.mkdir(parents=True, exist_ok=True)
            runtime = self.host_runtime if spec.network else self.runtime
            with self.log_path(*key, name).open("wb") as log:
                proc = subprocess.Popen(
                    runtime.argv(spec), cwd=cwd, stdout=log, stderr=subprocess.STDOUT
                )
            with self._lock:
                self._running.setdefault(key, []).append(spec)
            procs.append((name, spec, now_iso(), proc, cwd))
        timed_out = self._wait([p for *_, p, _ in procs], key, [s for _, s, *_ in procs], end)
        ended = []
        for name, spec, started, proc, cwd in procs:
            code = proc.returncode
            oom = code == 137 and self.runtime.oom_killed(spec, TRANSPORT, cwd=str(cwd))
            self._removals.put(spec)
            self.done.add((*key, name))
            ended.append(Ended(name, spec, started, code, oom))
        return ended, timed_out

    def _wait(
        self,
        procs: list[subprocess.Popen[bytes]],
        key: tuple[str, str],
        specs: list[ContainerSpec],
        end: float | None,
    ) -> bool:
        """Wait for every process; kill them all when the deadline passes or the pod goes."""
        late = False
        killed = 0.0
        while any(proc.poll() is None for proc in procs):
            time.sleep(0.1)
            late = late or (end is not None and time.monotonic() > end)
            if (late or key in self._deleted) and time.monotonic() - killed > 1.0:
                for spec, proc in zip(specs, procs, strict=True):
                    if proc.poll() is None:
                        TRANSPORT.run(self.runtime.cli("kill", spec.name), check=False, timeout=60)
                killed = time.monotonic()
        return late

    @staticmethod
    def _remaining(job: Mapping[str, Any], deadline: int | None) -> float | None:
        if deadline is None:
            return None
        start = datetime.fromisoformat(job["status"]["startTime"].replace("Z", "+00:00"))
        return max(deadline - (time.time() - start.timestamp()), 0.1)

    # -- reporting -----------------------------------------------------------------
    def _report_init(
        self,
        namespace: str,
        pod_name: str,
        job: Mapping[str, Any],
        plan: PodPlan,
        inits: list[Ended],
        timed_out: bool,
    ) -> None:
        waiting = {"waiting": {"reason": "PodInitializing"}}
        statuses = [{"name": n, "ready": False, "restartCount": 0, "state": waiting,
                     "image": s.image, "imageID": ""} for n, s in plan.apps]  # fmt: skip
        pod_status: dict[str, Any] = {
            "phase": "Failed",
            "conditions": [{"type": "Ready", "status": "False"}],
            "initContainerStatuses": [e.status() for e in inits],
            "containerStatuses": statuses,
        }
        self._finish(namespace, pod_name, job, pod_status, False, timed_out)

    def _report(
        self,
        namespace: str,
        pod_name: str,
        job: Mapping[str, Any],
        inits: list[Ended],
        apps: list[Ended],
        timed_out: bool,
    ) -> None:
        ok = all(e.code == 0 for e in apps) and not timed_out
        pod_status: dict[str, Any] = {
            "phase": "Succeeded" if ok else "Failed",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [e.status() for e in apps],
        }
        if inits:
            pod_status["initContainerStatuses"] = [e.status() for e in inits]
        self._finish(namespace, pod_name, job, pod_status, ok, timed_out)

    def _finish(
        self,
        namespace: str,
        pod_name: str,
        job: Mapping[str, Any],
        pod_status: dict[str, Any],
        ok: bool,
        timed_out: bool,
    ) -> None:
        """Publish the pod's end and the Job's condition; expire the Job after its TTL."""
        name = job["metadata"]["name"]
        if timed_out:
            pod_status.update(reason="DeadlineExceeded", message="Pod was active too long")
        self.cluster.update_pod_status(namespace, pod_name, **pod_status)
        cond = {"type": "Complete" if ok else "Failed", "status": "True",
                "lastProbeTime": now_iso(), "lastTransitionTime": now_iso()}  # fmt: skip
        if timed_out:
            cond.update(
                reason="DeadlineExceeded", message="Job was active longer than specified deadline"
            )
        elif not ok:
            cond.update(
                reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit"
            )
        counts = {"succeeded": 1} if ok else {"failed": 1}
        extra = {"completionTime": now_iso()} if ok else {}
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
            running = [spec for specs in self._running.values() for spec in specs]
        for spec in running:
            TRANSPORT.run(self.runtime.cli("kill", spec.name), check=False, timeout=60)
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout=30)
        self._removals.put(None)
        self._remover.join(timeout=120)
