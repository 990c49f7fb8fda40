"""The run cache: a job whose exact result already exists completes without a container.

A job's key hashes everything that determines its outputs: the image (by digest when the
runtime can tell one, else by reference), the manifest hash, the resolved config, the sha256
of every input and the runtime contract version.  When a completed job with the same key
exists and its output blobs are still stored, the new job completes at once: its outputs are
new file rows pointing at the same blobs (no copies), its ``.metadata.json`` is applied again
in the new job's scope, and its provenance names the job it was cached from.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select

from broker.finalize import apply_results, provenance_record
from broker.states import Reason, lock_job, transition
from catalog.blobstore import BlobInfo
from catalog.catalog import Catalog
from catalog.models import Gear, Job, JobState
from catalog.tree import get_container

#: Bump when what a gear sees at /flywheel/v0 changes in a way that could change outputs.
CONTRACT_VERSION = "flywheel-v0/1"


def cache_key(job: Job, gear: Gear, image: str, image_digest: str | None) -> str:
    doc = {
        "contract": CONTRACT_VERSION,
        "image": image_digest or f"unpinned:{image}",
        "manifest": gear.manifest_hash,
        "config": job.config,
        "inputs": {name: record["sha256"] for name, record in sorted(job.inputs.items())},
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def find_cached(cat: Catalog, key: str, exclude: int) -> Job | None:
    """The newest completed job with ``key`` whose output blobs are all still stored."""
    with cat.db.session(readonly=True) as session:
        rows = session.scalars(
            select(Job)
            .where(Job.cache_key == key, Job.state == JobState.COMPLETE.value, Job.id != exclude)
            .order_by(Job.id.desc())
            .limit(5)
        ).all()
    for row in rows:
        outputs = (row.provenance or {}).get("outputs", [])
        if all(cat.blobs.exists(o["sha256"]) for o in outputs):
            return row
    return None


def complete_from_cache(cat: Catalog, job_id: int, source: Job) -> Job:
    """Finish ``job_id`` with ``source``'s results (same blobs) in one transaction."""
    prov: dict[str, Any] = source.provenance or {}
    outputs = {o["name"]: BlobInfo(o["sha256"], o["size"]) for o in prov.get("outputs", [])}
    with cat.db.session() as session:
        job = lock_job(session, job_id)
        assert job is not None and job.destination_id is not None
        gear = session.get(Gear, job.gear_id)
        assert gear is not None
        dest = get_container(session, job.destination_id)
        produced = apply_results(session, job, dest, outputs, prov.get("metadata"))
        job.exit_code = 0
        job.cache_key = source.cache_key
        job.image_digest = source.image_digest
        job.runtime = source.runtime
        job.runtime_version = source.runtime_version
        job.log_sha256 = source.log_sha256
        transition(session, job, JobState.COMPLETE, Reason.CACHED, cached_from=source.id)
        session.flush()
        session.refresh(job, ["events"])
        record = provenance_record(session, job, gear, produced, None)
        record["cached_from"] = {"job_id": source.id, "key": source.cache_key}
        if "metadata" in prov:
            record["metadata"] = prov["metadata"]
        job.provenance = record
        if dest.level == "analysis":
            dest.provenance = record
        return job
