"""Job logs: tailed from the job folder while a job runs, from the blob store afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from broker.config import Settings
from broker.jobs import get_job
from broker.staging import job_dir
from catalog.catalog import Catalog
from catalog.models import Job, JobState

CHUNK = 64 * 1024


def stored_log(cat: Catalog, job: Job) -> Iterator[str]:
    """The log kept with a finished job."""
    assert job.log_sha256 is not None
    with cat.blobs.open(job.log_sha256) as stream:
        while chunk := stream.read(CHUNK):
            yield chunk.decode(errors="replace")


def follow_log(
    cat: Catalog, settings: Settings, job_id: int, follow: bool, interval: float = 0.5
) -> Iterator[str]:
    """What the job's log holds now; with ``follow``, keep yielding until the job ends."""
    offset = 0
    while True:
        job = get_job(cat, job_id)
        done = JobState(job.state).terminal
        path: Path = job_dir(settings.work_dir, job) / "logs" / "output.log"
        if path.is_file():
            with path.open("rb") as fh:
                fh.seek(offset)
                while chunk := fh.read(CHUNK):
                    offset += len(chunk)
                    yield chunk.decode(errors="replace")
        elif done and job.log_sha256:
            yield from stored_log(cat, job)
            return
        if done or not follow:
            return
        time.sleep(interval)
