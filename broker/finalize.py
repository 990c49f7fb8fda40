"""Finishing a job: outputs into the catalog, ``.metadata.json`` applied, provenance written.

Order matters for "kill at any moment": output and log blobs are written durably first; then
one transaction (a savepoint per job, when several end together) adds the file rows, applies
the metadata, writes the provenance record and moves the job to its final state.  A crash
before that commit leaves the job non-terminal with its folder intact, and the next finalize
does the same work again.
"""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from backends.base import BackendState, TaskStatus
from broker.jobs import input_file, timestamps
from broker.lookups import gear_manifest
from broker.states import BACKEND_OUTCOME, Reason, lock_job, transition
from catalog.access import Actor, actor_for, require
from catalog.blobstore import BlobInfo
from catalog.catalog import Catalog
from catalog.errors import GearbrokerError
from catalog.models import Container, File, Gear, Job, JobState, Level, RoleName
from catalog.paths import validate_file_name, validate_label
from catalog.rules import enqueue_rule_matches
from catalog.transfer import add_file_version
from catalog.tree import ancestors, container_path, current_file, file_path, get_container
from gearspec.metadata import (
    ChangeSet,
    ContainerUpdate,
    FileUpdate,
    parse_metadata,
    read_metadata_doc,
    scope_for,
)
from gearspec.staging import Destination


def collect_outputs(output_dir: Path, cat: Catalog) -> dict[str, BlobInfo]:
    """Store every regular file directly in ``output_dir`` (no symlinks, no folders)."""
    stored: dict[str, BlobInfo] = {}
    if not output_dir.is_dir():
        return stored
    for entry in sorted(output_dir.iterdir()):
        if entry.name == ".metadata.json":
            continue
        mode = os.lstat(entry).st_mode
        if not stat.S_ISREG(mode):
            continue  # symlinks could point at host files; folders are not Flywheel outputs
        validate_file_name(entry.name)
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as stream:
            stored[entry.name] = cat.blobs.put_stream(stream)
    return stored


def store_log(job_dir: Path, cat: Catalog) -> BlobInfo | None:
    log = job_dir / "logs" / "output.log"
    return cat.blobs.put_file(log) if log.is_file() else None


RetryHook = Callable[[Session, Job, Gear], object]


@dataclass(frozen=True)
class Ended:
    """A job whose backend reports a terminal ``status``, with its job folder."""

    job_id: int
    status: TaskStatus
    job_dir: Path


@dataclass
class _Results:
    """An ended job's outputs and log, stored as blobs, and the outcome they imply."""

    outputs: dict[str, BlobInfo]
    log: BlobInfo | None
    outcome: JobState
    reason: Reason | None
    problem: str | None


def finalize_job(
    cat: Catalog, job_id: int, status: TaskStatus, job_dir: Path, retry: RetryHook | None = None
) -> Job:
    """Record the end of a job whose backend reports a terminal ``status``.

    ``retry`` is called in the same transaction when the job failed, so a due retry exists
    exactly when the failure is recorded.
    """
    return finalize_jobs(cat, [Ended(job_id, status, job_dir)], retry)[0]


def finalize_jobs(
    cat: Catalog, ended: Sequence[Ended], retry: RetryHook | None = None
) -> list[Job]:
    """:func:`finalize_job` for many jobs, in job id order (so two dispatchers finalizing
    the same jobs lock them in the same order): blobs first, then one transaction with a
    savepoint per job, so a job whose results cannot be recorded fails alone
    (``finalize_error``)."""
    ended = sorted(ended, key=lambda e: e.job_id)
    stored = [_store_results(cat, e) for e in ended]
    out: list[Job] = []
    with cat.db.session() as session:
        for end, results in zip(ended, stored, strict=True):
            try:
                with session.begin_nested():
                    job = _record_end(session, end, results, retry)
            except (GearbrokerError, OSError) as exc:
                with session.begin_nested():
                    job = _fail_finalize(session, end.job_id, str(exc), results.log)
            out.append(job)
    return out


def _store_results(cat: Catalog, end: Ended) -> _Results:
    outcome, reason = BACKEND_OUTCOME[end.status.state]
    outputs: dict[str, BlobInfo] = {}
    problem: str | None = None
    if end.status.state is BackendState.COMPLETED:
        try:
            outputs = collect_outputs(end.job_dir / "v0" / "output", cat)
        except (GearbrokerError, OSError) as exc:
            outcome, reason, problem = JobState.FAILED, Reason.FINALIZE, f"outputs: {exc}"
    return _Results(outputs, store_log(end.job_dir, cat), outcome, reason, problem)


def _record_end(session: Session, end: Ended, results: _Results, retry: RetryHook | None) -> Job:
    status, outcome = end.status, results.outcome
    job = lock_job(session, end.job_id)
    if JobState(job.state).terminal:
        return job
    gear = session.get(Gear, job.gear_id)
    assert gear is not None
    dest = get_container(session, job.destination_id) if job.destination_id else None
    produced: list[dict[str, Any]] = []
    metadata_doc = None
    if outcome is JobState.COMPLETE and dest is not None:
        metadata_doc = read_metadata_doc(end.job_dir / "v0" / "output")
        produced = apply_results(session, job, dest, results.outputs, metadata_doc)
    job.exit_code = status.exit_code
    job.reason_detail = results.problem or status.message
    job.log_sha256 = results.log.sha256 if results.log else None
    detail: dict[str, Any] = {"exit_code": status.exit_code}
    if status.message:
        detail["message"] = status.message
    if outcome is JobState.CANCELLED and job.cancel_requested_by:
        detail["by"] = job.cancel_requested_by
    transition(session, job, outcome, results.reason, **detail)
    session.flush()
    session.refresh(job, ["events"])
    record = provenance_record(session, job, gear, produced, results.log)
    if metadata_doc is not None:
        record["metadata"] = metadata_doc
    job.provenance = record
    if dest is not None and dest.level == Level.ANALYSIS:
        dest.provenance = record
    if outcome is JobState.FAILED and retry is not None:
        retry(session, job, gear)
    return job


def _fail_finalize(session: Session, job_id: int, message: str, log: BlobInfo | None) -> Job:
    job = lock_job(session, job_id)
    if JobState(job.state).terminal:
        return job
    job.reason_detail = message
    job.log_sha256 = log.sha256 if log else None
    transition(session, job, JobState.FAILED, Reason.FINALIZE, message=message)
    return job


def apply_results(
    session: Session,
    job: Job,
    dest: Container,
    outputs: Mapping[str, BlobInfo],
    metadata_doc: object | None,
) -> list[dict[str, Any]]:
    """Add output files and apply a ``.metadata.json`` document as the job's user would."""
    actor = actor_for(session, job.created_by)
    require(session, actor, dest, RoleName.READ_WRITE)
    chain = [*ancestors(session, dest), dest]
    levels = {c.level: str(c.id) for c in chain[:-1] if c.level != Level.GROUP}
    inputs = [input_file(r, Path(r["file_name"])) for r in job.inputs.values()]
    scope = scope_for(
        Destination(dest.level, str(dest.id)), levels, None, inputs, output_names=outputs
    )
    changes = parse_metadata(metadata_doc, scope) if metadata_doc is not None else ChangeSet()
    updates = {
        u.name: u
        for u in (changes.for_level(dest.level) or ContainerUpdate(dest.level, str(dest.id))).files
        if u.is_output
    }
    produced = []
    for name, blob in outputs.items():
        meta = updates.get(name, FileUpdate(name=name))
        row, _status = add_file_version(
            session,
            actor,
            dest,
            name,
            blob,
            type=meta.type,
            mimetype=meta.mimetype,
            modality=meta.modality,
            classification={k: list(v) for k, v in (meta.classification or {}).items()},
            info=dict(meta.info or {}),
            tags=list(meta.tags or ()),
            origin_type="job",
            origin_id=str(job.id),
        )
        produced.append(
            {
                "name": name,
                "file_id": row.id,
                "version": row.version,
                "sha256": blob.sha256,
                "size": blob.size,
                "path": file_path(session, row),
            }
        )
    _apply_changes(session, actor, changes, chain)
    return produced


def _apply_changes(
    session: Session, actor: Actor, changes: ChangeSet, chain: list[Container]
) -> None:
    by_id = {str(c.id): c for c in chain}
    for update in changes.updates:
        container = by_id[update.container_id]
        require(session, actor, container, RoleName.READ_WRITE)
        label = update.fields.get("label")
        if isinstance(label, str) and label != container.label:
            container.label = validate_label(label, container.level)
        extra = {k: v for k, v in update.fields.items() if k != "label"}
        if update.info is not None or extra:
            container.info = _merge(container.info, {**extra, **dict(update.info or {})})
        if update.tags is not None:
            container.tags = list(dict.fromkeys([*container.tags, *update.tags]))
        changed = []
        for fu in update.files:
            if fu.is_output:
                continue
            row = current_file(session, container.id, fu.name)
            if row is not None:
                _apply_file_update(row, fu)
                changed.append(row)
        if changed:
            session.flush()
            enqueue_rule_matches(session, changed, "file-metadata-changed")


def _apply_file_update(row: File, fu: FileUpdate) -> None:
    if fu.type is not None:
        row.type = fu.type
    if fu.modality is not None:
        row.modality = fu.modality
    if fu.classification is not None:
        row.classification = {k: list(v) for k, v in fu.classification.items()}
    if fu.info is not None:
        row.info = _merge(row.info, dict(fu.info))
    if fu.tags is not None:
        row.tags = list(dict.fromkeys([*row.tags, *fu.tags]))


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` into a copy of ``base`` (objects merge, other values replace)."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def provenance_record(
    session: Session, job: Job, gear: Gear, outputs: list[dict[str, Any]], log: BlobInfo | None
) -> dict[str, Any]:
    """Everything needed to know how the outputs were made (stored on the job and analysis)."""
    manifest = gear_manifest(gear)
    dest = get_container(session, job.destination_id) if job.destination_id else None
    return {
        "job": {
            "id": job.id,
            "attempt": job.attempt,
            "previous_job_id": job.previous_job_id,
            "state": job.state,
            "reason": job.reason,
            "exit_code": job.exit_code,
            "message": job.reason_detail,
        },
        "gear": {
            "name": gear.name,
            "version": gear.version,
            "manifest_hash": gear.manifest_hash,
            "image": gear.image or manifest.image,
            "image_digest": job.image_digest,
        },
        "runtime": {"name": job.runtime, "version": job.runtime_version},
        "backend": {"name": job.backend, "external_id": job.external_id},
        "user": job.created_by,
        "timestamps": {k: v.isoformat() for k, v in timestamps(job).items()},
        "resources": job.options.get("resources", {}),
        "inputs": [
            {
                "name": r["name"],
                "path": r["path"],
                "file_id": r["file_id"],
                "version": r["version"],
                "sha256": r["sha256"],
                "size": r["size"],
            }
            for r in job.inputs.values()
        ],
        "config": job.config,
        "destination": container_path(session, dest) if dest is not None else None,
        "outputs": outputs,
        "log": {"sha256": log.sha256, "size": log.size} if log else None,
    }
