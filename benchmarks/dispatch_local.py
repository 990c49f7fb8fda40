"""Local dispatch benchmark: gear jobs through the broker against bare runs of the same container.

Usage: ``python benchmarks/dispatch_local.py [--runs 200] [--runtimes podman,bwrap]
[--concurrency 1] [--rounds 5] [--database URL] [--rootfs DIR] [--json out.json]``

For each runtime, in ``--rounds`` interleaved rounds (bare first in even rounds, broker first
in odd ones), both sides run ``--runs / --rounds`` times the same trivial gear (busybox
``bash -c 'echo ok > output/x'``) with ``--concurrency`` runs at a time:

- bare: the exact command line the runtime builds for the job's ContainerSpec (same image,
  mounts, env, user, limits, and ``--rm`` as the gear sets no memory limit), on a folder
  staged beforehand (staging is not timed);
- broker: ``create_job`` for each job, then an in-process Dispatcher serving those jobs to the
  end (claim, stage, submit to the local Dask backend, supervisor, poll, finalize with outputs,
  log and provenance in the catalog).  One backend (Dask cluster) per runtime is started, and
  warmed up with a few jobs, before any round; the dispatcher is configured as
  ``make_dispatcher`` would from the settings (only ``broker.max_concurrent`` is set, to
  ``--concurrency``).

Per round, each side's time per run is its wall time divided by its runs; the report quotes
medians over rounds of those, of the ratio broker/bare, and of the broker's overhead per job,
(broker - bare) / runs, plus medians over jobs of the broker's stages.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

# benchmarks/catalog.py would shadow the ``catalog`` package: keep this folder off the path.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE]

from sqlalchemy import select  # noqa: E402

from backends.base import Backend, TaskStatus  # noqa: E402
from broker.config import Settings, load_settings  # noqa: E402
from broker.dispatch import Dispatcher  # noqa: E402
from broker.jobs import JobRequest, create_job, get_job  # noqa: E402
from broker.runtimes.base import ContainerRuntime  # noqa: E402
from broker.staging import stage_job  # noqa: E402
from broker.task import TaskSpec  # noqa: E402
from broker.wiring import backend_factory, runtime_factory  # noqa: E402
from catalog.catalog import Catalog  # noqa: E402
from catalog.gears import install_gear  # noqa: E402
from catalog.models import Gear, Job, JobEvent, JobState  # noqa: E402
from catalog.tree import get_container  # noqa: E402
from gearspec.manifest import load_manifest  # noqa: E402

IMAGE = "localhost/gearbroker/busybox:1"
REPO = Path(__file__).resolve().parents[1]
COMMAND = "echo ok > output/x"
WARMUP_JOBS = 3
STAGES = ("create", "claim->submitted", "submitted->started", "run", "exit->noticed", "finalize")


def manifest() -> dict[str, Any]:
    return {
        "name": "bench-trivial",
        "label": "Trivial benchmark gear",
        "description": "Writes one small output file.",
        "version": "1.0.0",
        "author": "gearbroker benchmarks",
        "license": "MIT",
        "source": "https://example.org/gearbroker",
        "url": "https://example.org/gearbroker",
        "command": COMMAND,
        "inputs": {"infile": {"base": "file", "description": "any file"}},
        "config": {},
        "custom": {"gear-builder": {"category": "analysis", "image": IMAGE}},
    }


class TimedBackend(Backend):
    """Delegates to one long-lived backend and notes when each submit returned."""

    name = "local"

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.submitted: dict[int, float] = {}

    def submit(self, task: TaskSpec, runtime: ContainerRuntime) -> str:
        external_id = self.inner.submit(task, runtime)
        self.submitted[task.job_id] = time.time()
        return external_id

    def notify_changes(self, listener: Callable[[], None]) -> None:
        notify = getattr(self.inner, "notify_changes", None)
        if callable(notify):
            notify(listener)

    def status(self, ids: Sequence[str]) -> list[TaskStatus]:
        return self.inner.status(ids)

    def cancel(self, ids: Sequence[str]) -> list[bool]:
        return self.inner.cancel(ids)

    def render(self, task: TaskSpec, runtime: ContainerRuntime) -> str:
        return self.inner.render(task, runtime)

    def find(self, job_dir: str, key: str) -> str | None:
        return self.inner.find(job_dir, key)

    def log_paths(self, external_id: str, task: TaskSpec) -> list[str]:
        return self.inner.log_paths(external_id, task)

    def close(self) -> None:
        """Kept open across rounds (each ``serve`` closes its backends); see :meth:`shut`."""

    def shut(self) -> None:
        self.inner.close()


class TimedDispatcher(Dispatcher):
    """Notes when a terminal status was first seen and when its finalize returned."""

    noticed: dict[int, float]
    finalized: dict[int, float]

    def _poll(self, only: Collection[int] | None) -> tuple[bool, list[tuple[Job, TaskStatus]]]:
        started, ended = super()._poll(only)
        seen = time.time()
        for job, _status in ended:
            self.noticed.setdefault(job.id, seen)
        return started, ended

    def _finalize_all(self, ended: list[tuple[Job, TaskStatus]]) -> None:
        super()._finalize_all(ended)
        done = time.time()
        for job, _status in ended:
            self.finalized.setdefault(job.id, done)


class Side:
    """One runtime's broker and bare runner, kept across rounds."""

    def __init__(self, cat: Catalog, root: Path, runtime: str, args: argparse.Namespace) -> None:
        self.cat, self.root, self.runtime = cat, root / runtime, runtime
        self.settings = settings_for(self.root, cat, runtime, args)
        self.backend = TimedBackend(backend_factory(self.settings)("local"))
        self.noticed: dict[int, float] = {}
        self.finalized: dict[int, float] = {}
        self.concurrency = args.concurrency
        self.bare_count = 0
        self.cpu_s = 0.0

    def dispatcher(self) -> TimedDispatcher:
        settings = self.settings
        backend = self.backend

        def backends(name: str) -> Backend:
            return backend

        dispatcher = TimedDispatcher(
            self.cat,
            backends,
            runtime_factory(settings),
            settings.work_dir,
            backend_names=("local",),
            poll_interval=settings.poll_interval,
            max_in_flight=settings.max_concurrent * 4,
        )
        dispatcher.noticed, dispatcher.finalized = self.noticed, self.finalized
        return dispatcher

    def broker(self, request: JobRequest, runs: int) -> tuple[float, list[int], list[float]]:
        """Create ``runs`` jobs and serve them to the end: (wall s, job ids, create times).

        Also adds this process's CPU time (create, dispatcher, Dask) to ``self.cpu_s``.
        """
        start, cpu = time.perf_counter(), time.process_time()
        ids, creates = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            ids.append(create_job(self.cat, request).id)
            creates.append(time.perf_counter() - t0)
        self.dispatcher().serve(only=set(ids), timeout=600)
        wall = time.perf_counter() - start
        self.cpu_s += time.process_time() - cpu
        for job_id in ids:
            job = get_job(self.cat, job_id)
            if job.state != JobState.COMPLETE:
                sys.exit(f"{self.runtime}: job {job_id} is {job.state}: {job.reason_detail}")
        return wall, ids, creates

    def bare(self, template: Job, runs: int) -> tuple[float, list[float]]:
        """Stage ``runs`` folders (untimed), then run their commands: (wall s, per-run s)."""
        runtime = runtime_factory(self.settings)(self.runtime, None)
        argvs, folders = [], []
        with self.cat.db.session(readonly=True) as session:
            gear = session.get(Gear, template.gear_id)
            assert gear is not None and template.destination_id is not None
            dest = get_container(session, template.destination_id)
        for _ in range(runs):
            self.bare_count += 1
            work = self.root / "bare" / str(self.bare_count)
            manifest = load_manifest(gear.manifest)
            task = stage_job(template, gear, manifest, dest, self.cat.blobs, work)
            name = f"gb-bare-{self.runtime}-{uuid.uuid4().hex[:12]}"
            argv = runtime.argv(replace(task.container, name=name))
            if self.runtime in ("podman", "docker") and "--rm" not in argv:
                sys.exit(f"{self.runtime}: expected --rm in {argv}")
            argvs.append(argv)
            folders.append(Path(task.job_dir))

        def one(index: int) -> float:
            t0 = time.perf_counter()
            with (folders[index] / "logs" / "output.log").open("wb") as log:
                code = subprocess.call(
                    argvs[index], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    cwd=folders[index],
                )  # fmt: skip
            took = time.perf_counter() - t0
            if code != 0 or not (folders[index] / "v0" / "output" / "x").is_file():
                sys.exit(f"{self.runtime}: bare run failed ({code}): {argvs[index]}")
            return took

        start = time.perf_counter()
        with ThreadPoolExecutor(self.concurrency) as pool:
            each = list(pool.map(one, range(runs)))
        return time.perf_counter() - start, each

    def stages(self, ids: Sequence[int], creates: Sequence[float]) -> dict[str, list[float]]:
        """Per-job stage durations (s) from events, submit times, exit records and polls."""
        with self.cat.db.session(readonly=True) as session:
            rows = session.execute(
                select(JobEvent.job_id, JobEvent.time).where(
                    JobEvent.job_id.in_(list(ids)), JobEvent.to_state == JobState.QUEUED.value
                )
            ).all()
            found = session.execute(select(Job.id, Job.external_id).where(Job.id.in_(ids)))
            folders = {job_id: str(folder) for job_id, folder in found}
        queued = {job_id: when.timestamp() for job_id, when in rows}
        out: dict[str, list[float]] = {stage: [] for stage in STAGES}
        out["create"] = list(creates)
        for job_id in ids:
            record = json.loads((Path(folders[job_id]) / "exit.json").read_text())
            started = datetime.fromisoformat(record["started"]).timestamp()
            ended = datetime.fromisoformat(record["finished"]).timestamp()
            submitted = self.backend.submitted[job_id]
            out["claim->submitted"].append(submitted - queued[job_id])
            out["submitted->started"].append(started - submitted)
            out["run"].append(ended - started)
            out["exit->noticed"].append(self.noticed[job_id] - ended)
            out["finalize"].append(self.finalized[job_id] - self.noticed[job_id])
        return out


def settings_for(root: Path, cat: Catalog, runtime: str, args: argparse.Namespace) -> Settings:
    """Settings as a site would write them: defaults but for the catalog, runtime, concurrency."""
    root.mkdir(parents=True)
    lines = [
        "[catalog]",
        f'database = "{cat.db.engine.url.render_as_string(hide_password=False)}"',
        f'store = "{args.store}"',
        f'data_dir = "{root / "data"}"',
        "[broker]",
        f'work_dir = "{root / "jobs"}"',
        f'runtime = "{runtime}"',
        f"max_concurrent = {args.concurrency}",
        "[runtimes.bwrap.images]",
        f'"{IMAGE}" = "{args.rootfs}"',
    ]
    config = root / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    return load_settings(path=config, env={"GEARBROKER_USER": "admin", "HOME": str(root)})


def setup_catalog(root: Path, database: str | None, store: str) -> tuple[Catalog, JobRequest]:
    cat = Catalog.initialize(database or f"sqlite:///{root / 'catalog.db'}", store, "admin")
    group = f"bench-{uuid.uuid4().hex[:8]}"
    cat.create_group(group)
    cat.create_project(group, "dispatch")
    src = root / "input.txt"
    src.write_text("benchmark input\n")
    [uploaded] = cat.upload([src], f"{group}/dispatch/sub-01/ses-01/acq")
    spec = load_manifest(manifest())
    install_gear(cat, spec.to_dict(), spec.manifest_hash(), spec.image)
    ref = f"{spec.name}:{spec.version}"
    # every job must run: the run cache would complete repeats without a container
    return cat, JobRequest(ref, {"infile": uploaded.path}, options={"no_cache": True})


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run_runtime(
    side: Side, request: JobRequest, args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, Any]:
    """All rounds of one runtime; returns its medians and raw per-round numbers."""
    runtime = side.runtime
    log(f"{runtime}: warm-up ({WARMUP_JOBS} jobs each side)")
    _, warm_ids, _ = side.broker(replace(request, runtime=runtime), WARMUP_JOBS)
    template = get_job(side.cat, warm_ids[0])
    side.bare(template, WARMUP_JOBS)
    per_round = max(1, args.runs // args.rounds)
    rounds: list[dict[str, float]] = []
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    bare_runs: list[float] = []
    side.cpu_s = 0.0
    for index in range(args.rounds):
        order = ("bare", "broker") if index % 2 == 0 else ("broker", "bare")
        result: dict[str, float] = {}
        for which in order:
            if which == "bare":
                wall, each = side.bare(template, per_round)
                result["bare_s"] = wall
                bare_runs += each
            else:
                wall, ids, creates = side.broker(replace(request, runtime=runtime), per_round)
                result["broker_s"] = wall
                for stage, values in side.stages(ids, creates).items():
                    stages[stage] += values
        result["ratio"] = result["broker_s"] / result["bare_s"]
        result["overhead_ms"] = (result["broker_s"] - result["bare_s"]) / per_round * 1000
        rounds.append(result)
        log(
            f"{runtime}: round {index + 1}/{args.rounds}: bare {result['bare_s']:.2f} s, "
            f"broker {result['broker_s']:.2f} s ({per_round} runs each)"
        )
    return {
        "runs_per_round": per_round,
        "rounds": rounds,
        "bare_ms_per_run": median([r["bare_s"] / per_round * 1000 for r in rounds]),
        "broker_ms_per_job": median([r["broker_s"] / per_round * 1000 for r in rounds]),
        "ratio": median([r["ratio"] for r in rounds]),
        "overhead_ms_per_job": median([r["overhead_ms"] for r in rounds]),
        "bare_run_latency_ms": median(bare_runs) * 1000,
        "broker_process_cpu_ms_per_job": side.cpu_s / (per_round * args.rounds) * 1000,
        "stages_ms": {stage: median(values) * 1000 for stage, values in stages.items()},
    }


def progress(line: str) -> None:
    print(line, flush=True)


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n{args.runs} runs per side and runtime, concurrency {args.concurrency}, "
        f"{args.rounds} interleaved rounds; medians over rounds"
    )
    print("bare   = the runtime's own command line for the job's container, run directly")
    print("broker = create_job + Dispatcher (claim, stage, submit, supervise, poll, finalize)")
    print(f"{'runtime':8} {'bare ms/run':>12} {'broker ms/job':>14} {'ratio':>7} ", end="")
    print(f"{'overhead ms':>12}")
    for name, r in results.items():
        print(
            f"{name:8} {r['bare_ms_per_run']:12.1f} {r['broker_ms_per_job']:14.1f} "
            f"{r['ratio']:6.2f}x {r['overhead_ms_per_job']:12.1f}"
        )
    print("\nbroker stages, median ms per job (the 'run' stage contains the bare run itself):")
    print(f"{'runtime':8} " + " ".join(f"{s:>18}" for s in STAGES) + f" {'bare run':>9}")
    for name, r in results.items():
        cells = " ".join(f"{r['stages_ms'][s]:18.1f}" for s in STAGES)
        print(f"{name:8} {cells} {r['bare_run_latency_ms']:9.1f}")
    print("\nCPU time of the broker's own process (create_job, dispatcher, Dask including its")
    print("idle background; not the supervisors or containers), mean ms per job:")
    for name, r in results.items():
        print(f"{name:8} {r['broker_process_cpu_ms_per_job']:9.1f}")
    print("goals: podman ratio <= 1.2x; bwrap broker overhead < 30 ms per job")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per side and runtime")
    parser.add_argument("--runtimes", default="podman,bwrap")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database", help="catalog URL (default: a new SQLite file)")
    parser.add_argument("--rootfs", default=str(REPO / ".gb-services" / "rootfs" / "busybox"))
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    runtimes = [r for r in args.runtimes.split(",") if r]
    conf = REPO / ".gb-services" / "containers.conf"
    if conf.is_file():
        os.environ.setdefault("CONTAINERS_CONF", str(conf))
    root = Path(tempfile.mkdtemp(prefix="gb-bench-dispatch-", dir="/tmp"))
    args.store = str(root / "blobs")
    results: dict[str, dict[str, Any]] = {}
    cat, request = setup_catalog(root, args.database, args.store)
    try:
        for runtime in runtimes:
            side = Side(cat, root, runtime, args)
            try:
                results[runtime] = run_runtime(side, request, args, progress)
            finally:
                side.backend.shut()
    finally:
        cat.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
