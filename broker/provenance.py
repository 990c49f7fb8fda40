"""Provenance: for any file, the chain of jobs (and their inputs) that produced it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from catalog.catalog import Catalog
from catalog.errors import InvalidInputError
from catalog.models import File, Gear, Job, RoleName
from catalog.tree import file_path, resolve

MAX_DEPTH = 50


def provenance_chain(cat: Catalog, path: str) -> dict[str, Any]:
    """A tree: the file, the job that made it, that job's inputs, their jobs, and so on."""
    with cat.db.session(readonly=True) as session:
        obj = resolve(session, path)
        if not isinstance(obj, File):
            raise InvalidInputError(f"{path!r} is a container; provenance is traced for files")
        cat._require_obj(session, obj, RoleName.READ_ONLY)
        return _node(session, obj, 0, set())


def _node(session: Session, file: File, depth: int, seen: set[int]) -> dict[str, Any]:
    node: dict[str, Any] = {
        "path": file_path(session, file),
        "file_id": file.id,
        "version": file.version,
        "sha256": file.sha256,
        "origin": f"{file.origin_type} {file.origin_id}",
    }
    if file.origin_type != "job" or not file.origin_id or depth >= MAX_DEPTH:
        return node
    job = session.get(Job, int(file.origin_id))
    if job is None or job.id in seen:
        return node
    seen.add(job.id)
    gear = session.get(Gear, job.gear_id)
    prov = job.provenance or {}
    inputs = []
    for record in job.inputs.values():
        parent = session.get(File, record["file_id"])
        if parent is not None:
            inputs.append(_node(session, parent, depth + 1, seen))
    node["job"] = {
        "id": job.id,
        "gear": f"{gear.name}:{gear.version}" if gear else None,
        "manifest_hash": gear.manifest_hash if gear else None,
        "image": prov.get("gear", {}).get("image"),
        "image_digest": job.image_digest,
        "runtime": f"{job.runtime} {job.runtime_version or ''}".strip(),
        "backend": f"{job.backend} {job.external_id or ''}".strip(),
        "state": job.state,
        "user": job.created_by,
        "finished": job.finished.isoformat() if job.finished else None,
        "config": job.config,
        "inputs": inputs,
    }
    return node
