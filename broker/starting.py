"""Starting claimed jobs: cache check, staging, runtime choice, then grouped submission.

A :class:`JobStarter` belongs to one dispatcher and uses its backends.  Claimed jobs are read
in one transaction, staged, recorded with what they will run with (runtime, image digest,
cache key) in one more, and submitted grouped by backend, runtime and gear.  A job that cannot
start ends here (``failed`` with the reason, or ``cancelled`` if that was asked meanwhile).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import select

from backends.base import Backend
from broker.cache import cache_key, complete_from_cache, find_cached
from broker.lookups import gear_manifest
from broker.runtimes.base import ContainerRuntime
from broker.runtimes.native import NativeRuntime
from broker.staging import stage_job
from broker.states import Reason, lock_job, lock_jobs, transition
from broker.task import TaskSpec
from broker.transport import LocalTransport
from catalog.catalog import Catalog
from catalog.errors import GearbrokerError
from catalog.models import Container, Gear, Job, JobState

log = logging.getLogger(__name__)

RuntimeFactory = Callable[[str | None, str | None], ContainerRuntime]


@dataclass
class _Start:
    """A claimed job, staged, with what it will run with."""

    job: Job
    task: TaskSpec
    runtime: ContainerRuntime
    runtime_version: str | None
    image_digest: str | None
    cache_key: str


class JobStarter:
    """Stages and submits claimed jobs for one dispatcher."""

    def __init__(
        self,
        cat: Catalog,
        backends: Callable[[str], Backend],
        runtimes: RuntimeFactory,
        work_dir: Path,
    ) -> None:
        self.cat = cat
        self.backends = backends
        self.runtimes = runtimes
        self.work_dir = work_dir
        self._digests: dict[tuple[str, str], tuple[float, str | None, str | None]] = {}

    def start(self, job_ids: list[int]) -> None:
        """Prepare every claimed job, record what it will run with (one transaction), then
        submit them grouped by backend, runtime and gear (a group becomes one submission where
        the backend supports it, e.g. a Slurm array)."""
        with self.cat.db.session(readonly=True) as session:
            jobs = session.scalars(select(Job).where(Job.id.in_(job_ids)).order_by(Job.id)).all()
            gears = {
                g.id: g
                for g in session.scalars(select(Gear).where(Gear.id.in_({j.gear_id for j in jobs})))
            }
            dest_ids = {j.destination_id for j in jobs if j.destination_id is not None}
            dests = {
                c.id: c
                for c in session.scalars(select(Container).where(Container.id.in_(dest_ids)))
            }
        starts = []
        for job in jobs:
            assert job.destination_id is not None
            start = self._prepare(job, gears[job.gear_id], dests[job.destination_id])
            if start is not None:
                starts.append(start)
        groups: dict[tuple[str, str, int], list[_Start]] = defaultdict(list)
        for start in self._record_starts(starts):
            job = start.job
            groups[(job.backend, start.runtime.name, job.gear_id)].append(start)
        for (backend_name, _runtime, _gear), items in groups.items():
            try:
                ids = self.backends(backend_name).submit_many(
                    [s.task for s in items], items[0].runtime
                )
            except (GearbrokerError, OSError) as exc:
                for item in items:
                    self._end_early(item.job.id, JobState.FAILED, Reason.SUBMIT, str(exc))
                continue
            with self.cat.db.session() as session:
                rows = lock_jobs(session, [s.job.id for s in items])
                for item, external_id in zip(items, ids, strict=True):
                    rows[item.job.id].external_id = external_id

    def _image_facts(self, runtime: ContainerRuntime, image: str) -> tuple[str | None, str | None]:
        """(digest, runtime version), asked once a minute per runtime and image."""
        key = (runtime.name, image)
        cached = self._digests.get(key)
        if cached is None or time.monotonic() - cached[0] > 60:
            transport = LocalTransport()
            cached = (
                time.monotonic(),
                runtime.image_digest(image, transport),
                runtime.version(transport),
            )
            self._digests[key] = cached
        return cached[1], cached[2]

    def _prepare(self, job: Job, gear: Gear, dest: Container) -> _Start | None:
        """Cache check, staging and runtime choice for one claimed job (None: it ended)."""
        manifest = gear_manifest(gear)
        image = gear.image or manifest.image or ""
        try:
            backend = self.backends(job.backend)
            if backend.runtimes is not None and not backend.runtimes:
                runtime: ContainerRuntime = NativeRuntime()  # e.g. Kubernetes runs images itself
            else:
                preferred = manifest.preferred_runtime or backend.default_runtime
                runtime = self.runtimes(job.runtime, preferred)
            digest, version = self._image_facts(runtime, image)
        except (GearbrokerError, OSError) as exc:
            self._end_early(job.id, JobState.FAILED, Reason.SUBMIT, str(exc))
            return None
        digest = digest or manifest.image_digest
        key = cache_key(job, gear, image, digest)
        if not job.options.get("no_cache"):
            source = find_cached(self.cat, key, exclude=job.id)
            if source is not None:
                complete_from_cache(self.cat, job.id, source)
                return None
        try:
            task = stage_job(job, gear, manifest, dest, self.cat.blobs, self.work_dir)
        except (GearbrokerError, OSError) as exc:
            self._end_early(job.id, JobState.FAILED, Reason.STAGING, str(exc))
            return None
        return _Start(job, task, runtime, version, digest, key)

    def _record_starts(self, starts: list[_Start]) -> list[_Start]:
        """Record each staged job's runtime, image digest and cache key in one transaction;
        a job cancelled (or ended) meanwhile is dropped, and ends here if it had not."""
        if not starts:
            return []
        kept = []
        with self.cat.db.session() as session:
            rows = lock_jobs(session, [s.job.id for s in starts])
            for start in starts:
                row = rows[start.job.id]
                if row.cancel_requested_by or JobState(row.state).terminal:
                    shutil.rmtree(start.task.job_dir, ignore_errors=True)
                    if not JobState(row.state).terminal:
                        message = "cancelled before start"
                        row.reason_detail = message
                        transition(
                            session, row, JobState.CANCELLED, Reason.CANCELLED,
                            message=message, by=row.cancel_requested_by,
                        )  # fmt: skip
                    continue
                row.runtime = start.runtime.name
                row.runtime_version = start.runtime_version
                row.image_digest = start.image_digest
                row.cache_key = start.cache_key
                row.options = {**row.options, "resources": asdict(start.task.resources)}
                start.job = row
                kept.append(start)
        return kept

    def _end_early(self, job_id: int, state: JobState, reason: Reason, message: str) -> None:
        log.warning("job %s: %s: %s", job_id, reason.value, message)
        with self.cat.db.session() as session:
            row = lock_job(session, job_id)
            assert row is not None
            if JobState(row.state).terminal:
                return
            row.reason_detail = message
            extra = {"by": row.cancel_requested_by} if state is JobState.CANCELLED else {}
            transition(session, row, state, reason, message=message, **extra)
