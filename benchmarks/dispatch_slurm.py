"""Slurm dispatch benchmark: SlurmBackend.submit_many (job arrays) against a bash sbatch loop.

Usage: ``python benchmarks/dispatch_slurm.py [--jobs 1000] [--rootfs DIR] [--via local|ssh]
[--poll 1.0] [--json out.json]``

Both sides run the same trivial gear (busybox ``echo`` through the bwrap runtime with the
rootfs from ``scripts/images/build-test-images.sh rootfs``) in their own staged job folders on
the same Slurm cluster.  The backend submits ``--jobs`` tasks as arrays (no concurrency
throttle, like the loop); the raw side writes the equivalent single-job scripts and submits
them with ``for f in *.sh; do sbatch --parsable "$f"; done`` in one bash process.  Each side's
completion is timed from the start of its submission until every job is terminal, polled
with the backend's batched ``status`` at the same interval.  ``--via ssh`` sends the backend's
commands over SSH to the test sshd (``GEARBROKER_TEST_SSH_*``); the loop always runs here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

# benchmarks/catalog.py would shadow the ``catalog`` package: keep this folder off the path.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE]

from backends.base import BackendState, TaskStatus  # noqa: E402
from backends.slurm import SlurmBackend, SlurmSiteConfig  # noqa: E402
from broker.runtimes import make_runtime  # noqa: E402
from broker.runtimes.base import ContainerRuntime  # noqa: E402
from broker.task import GEAR_ROOT, ContainerSpec, Mount, TaskSpec  # noqa: E402

IMAGE = "localhost/gearbroker/busybox:1"
REPO = Path(__file__).resolve().parents[1]


def make_tasks(root: Path, count: int, first_id: int) -> list[TaskSpec]:
    """Staged job folders (v0/output, logs) and their TaskSpecs for a trivial echo gear."""
    tasks = []
    for job_id in range(first_id, first_id + count):
        job_dir = root / f"job-{job_id}"
        (job_dir / "v0" / "output").mkdir(parents=True)
        (job_dir / "logs").mkdir()
        container = ContainerSpec(
            name=f"gb-job-{job_id}-1",
            image=IMAGE,
            argv=["sh", "-c", "echo done > output/done.txt"],
            mounts=[Mount(str(job_dir / "v0"), GEAR_ROOT, read_only=False)],
        )
        tasks.append(TaskSpec(job_id=job_id, attempt=1, job_dir=str(job_dir), container=container))
    return tasks


def wait_all(backend: SlurmBackend, ids: Sequence[str], poll: float) -> list[TaskStatus]:
    """Poll ``status`` until every id is terminal."""
    while True:
        statuses = backend.status(ids)
        if all(s.state.terminal for s in statuses):
            return statuses
        time.sleep(poll)


def run_backend(
    backend: SlurmBackend, tasks: list[TaskSpec], runtime: ContainerRuntime, poll: float
) -> dict[str, float]:
    start = time.perf_counter()
    ids = backend.submit_many(tasks, runtime)
    submitted = time.perf_counter() - start
    statuses = wait_all(backend, ids, poll)
    done = time.perf_counter() - start
    check(statuses, tasks, "backend")
    return {"submit_s": submitted, "complete_s": done, "submit_rate": len(tasks) / submitted}


def run_raw_loop(
    backend: SlurmBackend, tasks: list[TaskSpec], runtime: ContainerRuntime, poll: float,
    scripts_dir: Path,
) -> dict[str, float]:  # fmt: skip
    for task in tasks:
        (scripts_dir / f"{task.job_id:06d}.sh").write_text(backend.render(task, runtime))
    loop = 'for f in "$1"/*.sh; do sbatch --parsable "$f" || exit 1; done'
    start = time.perf_counter()
    out = subprocess.run(
        ["bash", "-c", loop, "raw-loop", str(scripts_dir)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    submitted = time.perf_counter() - start
    ids = [line.split(";")[0] for line in out.stdout.split()]
    statuses = wait_all(backend, ids, poll)
    done = time.perf_counter() - start
    check(statuses, tasks, "raw loop")
    return {"submit_s": submitted, "complete_s": done, "submit_rate": len(tasks) / submitted}


def check(statuses: Sequence[TaskStatus], tasks: Sequence[TaskSpec], side: str) -> None:
    bad = [s for s in statuses if s.state is not BackendState.COMPLETED]
    missing = [t for t in tasks if not (Path(t.job_dir) / "v0/output/done.txt").is_file()]
    if bad or missing:
        sys.exit(
            f"{side}: {len(bad)} jobs did not complete ({bad[:3]}), {len(missing)} outputs missing"
        )


def site_section(scratch: Path, via: str) -> dict[str, object]:
    section: dict[str, object] = {
        "scratch_root": str(scratch),
        "array_concurrency": 0,
        "status_min_interval_s": 0,
        "accounting": "no",
    }
    if via == "ssh":
        env = os.environ
        section.update(
            ssh_host=env["GEARBROKER_TEST_SSH_HOST"],
            ssh_port=int(env["GEARBROKER_TEST_SSH_PORT"]),
            ssh_user=env.get("GEARBROKER_TEST_SSH_USER", "root"),
            ssh_key=env["GEARBROKER_TEST_SSH_KEY"],
            ssh_known_hosts=env["GEARBROKER_TEST_SSH_KNOWN_HOSTS"],
            ssh_agent=False,
        )
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rootfs", default=str(REPO / ".gb-services" / "rootfs" / "busybox"))
    parser.add_argument("--via", choices=("local", "ssh"), default="local")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between status polls")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if shutil.which("sbatch") is None or not Path(args.rootfs, "bin", "busybox").is_file():
        sys.exit("needs Slurm (scripts/services/slurm.sh start) and the busybox rootfs")
    runtime = make_runtime("bwrap", images={IMAGE: args.rootfs})
    with tempfile.TemporaryDirectory(prefix="gb-bench-slurm-", dir="/tmp") as tmp:
        scratch = Path(tmp)
        backend = SlurmBackend(SlurmSiteConfig.from_mapping(site_section(scratch, args.via)))
        try:
            ours = run_backend(
                backend, make_tasks(scratch / "ours", args.jobs, 1), runtime, args.poll
            )
            (scratch / "scripts").mkdir()
            raw_tasks = make_tasks(scratch / "raw", args.jobs, 1_000_001)
            raw = run_raw_loop(backend, raw_tasks, runtime, args.poll, scratch / "scripts")
        finally:
            backend.close()
    rate, secs, done = "submit_rate", "submit_s", "complete_s"
    rows = [
        ("submissions/s", ours[rate], raw[rate], ours[rate] / raw[rate]),
        ("submit time (s)", ours[secs], raw[secs], raw[secs] / ours[secs]),
        ("all complete (s)", ours[done], raw[done], raw[done] / ours[done]),
    ]
    print(f"{args.jobs} trivial gear jobs on Slurm (backend via {args.via}; poll {args.poll} s)")
    print(f"{'':18} {'backend (arrays)':>17} {'bash sbatch loop':>17} {'speed-up':>9}")
    for label, mine, theirs, ratio in rows:
        print(f"{label:18} {mine:17.2f} {theirs:17.2f} {ratio:8.1f}x")
    print("goals: submission >= 5x the loop's rate; completion no slower than the loop (>= 1.0x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"jobs": args.jobs, "backend": ours, "raw": raw}))


if __name__ == "__main__":
    main()
