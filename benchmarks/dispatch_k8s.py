"""Kubernetes dispatch benchmark: N gear jobs created and watched to completion.

Usage: ``python benchmarks/dispatch_k8s.py [--jobs 500] [--slots 6] [--poll 1.0]
[--json out.json]``

No real cluster can be installed here, so the Jobs go to the test API server of
``tests/k8s_api`` (started as its own process, so the CPU measured here is the broker's
alone), which runs each pod as a Podman container (``$CONTAINERS_CONF``, image
``localhost/gearbroker/busybox:1`` from ``scripts/images/build-test-images.sh podman``).
Each job is a trivial gear running ``true`` in its own staged job folder on the "PVC".  The
backend is driven as the dispatcher drives it: ``submit`` per job, then batched ``status``
every ``--poll`` seconds until all are terminal.  Printed: API requests per job (the server
counts them by verb; goal <= 3, i.e. watch, not poll) and the broker's CPU seconds per job
(process time from the first submit to the last terminal status).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# benchmarks/catalog.py would shadow the ``catalog`` package: keep this folder off the path.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE]
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backends.base import BackendState  # noqa: E402
from backends.kubernetes import KubernetesBackend, KubernetesSiteConfig  # noqa: E402
from broker.runtimes.podman import PodmanRuntime  # noqa: E402
from broker.task import GEAR_ROOT, ContainerSpec, Mount, TaskSpec  # noqa: E402

IMAGE = "localhost/gearbroker/busybox:1"
CLAIM = "gb-shared"
UID = 1000 if os.getuid() == 0 else os.getuid()


def make_tasks(root: Path, count: int) -> list[TaskSpec]:
    """Staged job folders (v0/output, logs) and TaskSpecs of a gear running ``true``."""
    tasks = []
    for job_id in range(1, count + 1):
        job_dir = root / "jobs" / f"{job_id}-1"
        (job_dir / "v0" / "output").mkdir(parents=True)
        (job_dir / "logs").mkdir()
        container = ContainerSpec(
            name=f"gb-job-{job_id}-1",
            image=IMAGE,
            argv=["true"],
            mounts=[Mount(str(job_dir / "v0" / "output"), f"{GEAR_ROOT}/output", False)],
            user=f"{UID}:{UID}",
        )
        tasks.append(TaskSpec(job_id=job_id, attempt=1, job_dir=str(job_dir), container=container))
    return tasks


def start_server(root: Path, slots: int) -> tuple[subprocess.Popen[str], str, Path]:
    kubeconfig = root / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.k8s_api", "--root", str(root), "--claim", CLAIM,
         "--kubeconfig", str(kubeconfig), "--slots", str(slots)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "ready":
        proc.kill()
        raise SystemExit("the test API server did not start")
    return proc, line[1], kubeconfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--slots", type=int, default=6, help="pods the server runs at once")
    parser.add_argument("--poll", type=float, default=1.0, help="status() interval, seconds")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gb-k8s-bench-") as tmp:
        root = Path(tmp)
        server, url, kubeconfig = start_server(root, args.slots)
        try:
            results = run(root, kubeconfig, url, args.jobs, args.poll)
        finally:
            server.terminate()
            server.wait(timeout=60)
    for key, value in results.items():
        print(f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def run(root: Path, kubeconfig: Path, url: str, count: int, poll: float) -> dict[str, object]:
    tasks = make_tasks(root, count)
    if os.getuid() == 0:
        for task in tasks:
            os.chown(Path(task.job_dir) / "v0" / "output", UID, UID)
    site = KubernetesSiteConfig.from_mapping(
        {"kubeconfig": str(kubeconfig), "pvc_name": CLAIM, "pvc_root": str(root)}
    )
    backend = KubernetesBackend(site)
    runtime = PodmanRuntime()  # ignored by the backend
    try:
        backend.status([])  # connect and start the watch before timing
        cpu0, wall0 = time.process_time(), time.perf_counter()
        ids = [backend.submit(task, runtime) for task in tasks]
        submitted = time.perf_counter() - wall0
        while True:
            statuses = backend.status(ids)
            if all(s.state.terminal for s in statuses):
                break
            time.sleep(poll)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
    finally:
        backend.close()
    with urllib.request.urlopen(f"{url}/_test/counts", timeout=30) as answer:
        counts: dict[str, int] = json.load(answer)
    bad = [s for s in statuses if s.state is not BackendState.COMPLETED]
    if bad:
        raise SystemExit(f"{len(bad)} jobs did not complete, e.g. {bad[0]}")
    missing = [t for t in tasks if not (Path(t.job_dir) / "logs" / "output.log").exists()]
    if missing:
        raise SystemExit(f"{len(missing)} jobs have no log file")
    total = sum(counts.values())
    return {
        "jobs": count,
        "submit_s": round(submitted, 2),
        "complete_s": round(wall, 2),
        "api_requests": total,
        "api_requests_by_verb": dict(sorted(counts.items())),
        "api_requests_per_job": round(total / count, 3),
        "broker_cpu_s": round(cpu, 2),
        "broker_cpu_s_per_job": round(cpu / count, 5),
    }


if __name__ == "__main__":
    main()
