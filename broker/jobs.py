"""Creating, listing, cancelling and retrying jobs (the catalog side of a gear run).

A job is validated completely when it is created (config, inputs, destination, permissions),
so a pending job only fails later for reasons outside the user's request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.lookups import Lookups
from broker.states import (
    PRIORITIES,
    Reason,
    lock_job,
    record_created,
    record_created_many,
    transition,
)
from catalog import audit
from catalog.access import require
from catalog.catalog import Catalog
from catalog.errors import ConflictError, GearbrokerError, InvalidInputError, NotFoundError
from catalog.models import Container, File, Gear, Job, JobState, Level, RoleName, utcnow
from catalog.tree import container_path, file_path, get_container, new_container, resolve
from gearspec.config_resolve import check_config
from gearspec.errors import InvocationError, Issue
from gearspec.inputs import Hierarchy, InputFile, check_inputs
from gearspec.manifest import Manifest
from gearspec.values import coerce_cli_value

#: Gear categories whose outputs go into a new Analysis container (Flywheel's rule).
ANALYSIS_CATEGORIES = frozenset({"analysis"})


@dataclass
class JobRequest:
    """What a user asks for: a gear, named inputs (catalog paths), config, where to write."""

    gear: str
    inputs: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    destination: str | None = None
    backend: str = "local"
    runtime: str | None = None
    priority: str = "medium"
    options: dict[str, Any] = field(default_factory=dict)
    rule_id: int | None = None
    trigger_file_id: int | None = None
    batch_id: int | None = None


def gear_category(manifest: Manifest) -> str:
    builder = manifest.custom.get("gear-builder")
    category = builder.get("category") if isinstance(builder, dict) else None
    return str(category) if category else "converter"


def coerce_config(manifest: Manifest, raw: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``key=value`` strings into the JSON types the manifest declares."""
    out: dict[str, Any] = {}
    issues = []
    for key, text in raw.items():
        spec = manifest.config.get(key)
        if spec is None:
            out[key] = text  # reported as unknown by check_config
            continue
        try:
            out[key] = coerce_cli_value(spec, text)
        except ValueError as exc:
            issues.append(Issue(f"$.config.{key}", str(exc)))
    if issues:
        raise InvocationError(issues, source=f"config of gear {manifest.name}")
    return out


def input_record(
    session: Session, name: str, file: File, lookups: Lookups | None = None
) -> dict[str, Any]:
    """What a job keeps about one input file (enough to stage it and to prove provenance)."""
    container = get_container(session, file.container_id)
    return {
        "name": name,
        "file_id": file.id,
        "path": lookups.file_path(session, file) if lookups else file_path(session, file),
        "file_name": file.name,
        "version": file.version,
        "sha256": file.sha256,
        "size": file.size,
        "type": file.type,
        "mimetype": file.mimetype,
        "modality": file.modality,
        "info": file.info,
        "tags": file.tags,
        "classification": file.classification,
        "container_id": container.id,
        "container_level": container.level,
    }


def input_file(record: Mapping[str, Any], source_path: Path) -> InputFile:
    """The gear-spec view of a stored input record."""
    return InputFile(
        name=record["name"],
        source_path=source_path,
        file_name=record["file_name"],
        type=record.get("type"),
        mimetype=record.get("mimetype") or "application/octet-stream",
        modality=record.get("modality"),
        info=record.get("info") or {},
        tags=record.get("tags") or [],
        classification=record.get("classification") or {},
        size=record["size"],
        file_id=str(record["file_id"]),
        version=record["version"],
        hierarchy=Hierarchy(type=record["container_level"], id=str(record["container_id"])),
    )


@dataclass
class _Prepared:
    gear: Gear
    manifest: Manifest
    records: dict[str, dict[str, Any]]
    config: dict[str, Any]
    target: Container


def _prepare(session: Session, cat: Catalog, request: JobRequest, lookups: Lookups) -> _Prepared:
    if request.priority not in PRIORITIES:
        raise InvalidInputError(f"priority must be one of {', '.join(PRIORITIES)}")
    gear, manifest = lookups.gear(request.gear)
    records = {}
    for name, path in request.inputs.items():
        obj = _resolve_input(session, path)
        if not isinstance(obj, File):
            raise InvalidInputError(f"input {name}={path!r} names a container, not a file")
        cat._require_obj(session, obj, RoleName.READ_ONLY)
        records[name] = input_record(session, name, obj, lookups)
    resolved = _check_invocation(manifest, request.config, records)
    target = _destination(session, cat, request, records)
    require(session, cat.actor, target, RoleName.READ_WRITE)
    return _Prepared(gear, manifest, records, resolved, target)


def validate_request(cat: Catalog, request: JobRequest) -> None:
    """Every check ``create_job`` makes, without creating anything."""
    with cat.db.session(readonly=True) as session:
        _prepare(session, cat, request, Lookups(cat))


def create_job(cat: Catalog, request: JobRequest) -> Job:
    """Validate ``request`` and create a pending job; raises with every problem at once."""
    with cat.db.session() as session:
        return create_job_in(session, cat, request)


def create_job_in(
    session: Session, cat: Catalog, request: JobRequest, lookups: Lookups | None = None
) -> Job:
    """:func:`create_job` inside the caller's transaction (``cat`` gives the acting user)."""
    [job] = create_jobs_in(session, [(cat, request)], lookups)
    if isinstance(job, GearbrokerError):
        raise job
    return job


def create_jobs_in(
    session: Session,
    requests: Sequence[tuple[Catalog, JobRequest]],
    lookups: Lookups | None = None,
) -> list[Job | GearbrokerError]:
    """Many :func:`create_job_in` (each request with its acting user) with one insert of the
    jobs.  A request that fails validation yields its error in its place and creates nothing;
    ``lookups`` shares gear and path lookups (one batch, one transaction)."""
    out: list[Job | GearbrokerError] = []
    made: list[tuple[Catalog, Job, _Prepared, str]] = []
    for cat, request in requests:
        looked = lookups or Lookups(cat)
        try:
            prep = _prepare(session, cat, request, looked)
        except GearbrokerError as exc:
            out.append(exc)
            continue
        gear = prep.gear
        if gear_category(prep.manifest) in ANALYSIS_CATEGORIES:
            label = f"{gear.name} {utcnow():%Y-%m-%d %H:%M:%S}"
            prep.target = new_container(session, prep.target, label, Level.ANALYSIS, flush=False)
        job = Job(
            gear_id=gear.id,
            state=JobState.PENDING.value,
            priority=PRIORITIES[request.priority],
            created_by=cat.actor.username,
            config=prep.config,
            inputs=prep.records,
            backend=request.backend,
            runtime=request.runtime,
            options=dict(request.options),
            rule_id=request.rule_id,
            trigger_file_id=request.trigger_file_id,
            batch_id=request.batch_id,
        )
        path = looked.container_path(session, prep.target)
        made.append((cat, job, prep, path))
        out.append(job)
    session.flush()  # the new analyses, in one statement
    for _cat, job, prep, _path in made:
        job.destination_id = prep.target.id  # known now for the new analyses too
    session.add_all([job for _cat, job, _prep, _path in made])
    session.flush()
    created: list[tuple[Job, dict[str, Any]]] = []
    audits: dict[str, tuple[Catalog, list[audit.Event]]] = {}
    for cat, job, prep, path in made:
        if prep.target.level == Level.ANALYSIS:
            prep.target.job_id = job.id
        detail = {"gear": f"{prep.gear.name}:{prep.gear.version}"}
        created.append((job, detail))
        events = audits.setdefault(cat.actor.username, (cat, []))[1]
        events.append(("job", job.id, path, detail))
    record_created_many(session, created)
    for cat, events in audits.values():
        audit.record_many(session, cat.actor, "job.create", events)
    return out


def _resolve_input(session: Session, path: str) -> Container | File:
    """A catalog path, or ``<file:N>`` for one exact file version (used by retries)."""
    match = re.fullmatch(r"<file:(\d+)>", path.strip())
    if match is None:
        return resolve(session, path)
    file = session.get(File, int(match.group(1)))
    if file is None:
        raise NotFoundError(f"no file version {match.group(1)}")
    return file


def _check_invocation(
    manifest: Manifest, config: Mapping[str, Any], records: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The resolved config; InvocationError with every config and input problem."""
    resolved, issues = check_config(manifest, config)
    files = [input_file(r, Path(r["file_name"])) for r in records.values()]
    issues.extend(check_inputs(manifest, files, check_sources=False))
    if issues:
        raise InvocationError(sorted(issues), source=f"run of gear {manifest.name}")
    return resolved


def _destination(
    session: Session, cat: Catalog, request: JobRequest, records: Mapping[str, Mapping[str, Any]]
) -> Container:
    if request.destination:
        obj = resolve(session, request.destination)
        if not isinstance(obj, Container) or obj.level in (Level.GROUP, Level.ANALYSIS):
            raise InvalidInputError(
                "--destination names a project, subject, session or acquisition"
            )
        return obj
    if not records:
        raise InvalidInputError("a gear run without file inputs needs --destination")
    first = next(iter(records.values()))
    container = get_container(session, first["container_id"])
    if container.level == Level.ANALYSIS:
        assert container.parent_id is not None
        container = get_container(session, container.parent_id)
    return container


def get_job(cat: Catalog, job_id: int) -> Job:
    """A job the acting user may see (its creator, or a reader of its destination)."""
    with cat.db.session(readonly=True) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id}")
        if job.created_by != cat.actor.username and job.destination_id is not None:
            require(
                session, cat.actor, get_container(session, job.destination_id), RoleName.READ_ONLY
            )
        session.refresh(job, ["gear", "events"])
        return job


def list_jobs(
    cat: Catalog, state: str | None = None, gear: str | None = None, limit: int = 100
) -> list[tuple[Job, Gear]]:
    with cat.db.session(readonly=True) as session:
        stmt = select(Job, Gear).join(Gear, Gear.id == Job.gear_id).order_by(Job.id.desc())
        if state:
            stmt = stmt.where(Job.state == JobState(state).value)
        if gear:
            stmt = stmt.where(Gear.name == gear)
        if not cat.actor.is_admin:
            stmt = stmt.where(Job.created_by == cat.actor.username)
        return [(j, g) for j, g in session.execute(stmt.limit(limit))]


def cancel_job(cat: Catalog, job_id: int) -> Job:
    """Cancel at once when pending; otherwise ask the dispatcher to stop the container."""
    job = get_job(cat, job_id)
    with cat.db.session() as session:
        row = lock_job(session, job.id)
        assert row is not None
        state = JobState(row.state)
        if state.terminal:
            raise ConflictError(f"job {job_id} is already {state.value}")
        if row.created_by != cat.actor.username and row.destination_id is not None:
            require(
                session, cat.actor, get_container(session, row.destination_id), RoleName.READ_WRITE
            )
        row.cancel_requested_by = cat.actor.username
        if state is JobState.PENDING:
            transition(session, row, JobState.CANCELLED, Reason.CANCELLED, by=cat.actor.username)
        audit.record(session, cat.actor, "job.cancel", "job", row.id, None)
        return row


def retry_job(cat: Catalog, job_id: int) -> Job:
    """A new attempt of a failed or cancelled job, linked to it."""
    old = get_job(cat, job_id)
    if old.state not in (JobState.FAILED, JobState.CANCELLED):
        raise ConflictError(f"job {job_id} is {old.state}; only failed or cancelled jobs retry")
    gear = old.gear
    with cat.db.session(readonly=True) as session:
        dest = get_container(session, old.destination_id) if old.destination_id else None
        if dest is not None and dest.level == Level.ANALYSIS:
            assert dest.parent_id is not None
            dest = get_container(session, dest.parent_id)
        destination = container_path(session, dest) if dest else None
        inputs = {name: f"<file:{r['file_id']}>" for name, r in old.inputs.items()}
    request = JobRequest(
        gear=f"{gear.name}:{gear.version}",
        inputs=inputs,
        config=old.config,
        destination=destination,
        backend=old.backend,
        runtime=old.runtime,
        options=carried_options(old.options),
    )
    with cat.db.session() as session:  # the attempt and its link commit together
        new = create_job_in(session, cat, request)
        new.previous_job_id = old.id
        new.attempt = old.attempt + 1
        new.priority = old.priority
        return new


#: Options that describe one run (what it was given, whether a cancel was sent), not the job.
_PER_RUN_OPTIONS = ("cancel_sent", "resources")


def carried_options(options: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A job's options for its next attempt: per-run keys dropped, ``changes`` applied."""
    return {k: v for k, v in {**options, **changes}.items() if k not in _PER_RUN_OPTIONS}


def new_attempt(session: Session, job: Job, reason: str, **options: Any) -> Job:
    """The next attempt of a failed ``job`` (same gear, inputs, config), in ``session``.

    Analysis gears get a fresh analysis next to the old one; ``options`` are merged into the
    job's options (e.g. ``memory_mb`` for an out-of-memory retry).
    """
    dest = get_container(session, job.destination_id) if job.destination_id else None
    if dest is not None and dest.level == Level.ANALYSIS:
        assert dest.parent_id is not None
        parent = get_container(session, dest.parent_id)
        dest = new_container(
            session, parent, f"{dest.label} (attempt {job.attempt + 1})"[:255], Level.ANALYSIS
        )
    row = Job(
        gear_id=job.gear_id,
        state=JobState.PENDING.value,
        priority=job.priority,
        created_by=job.created_by,
        config=job.config,
        inputs=job.inputs,
        destination_id=dest.id if dest is not None else None,
        backend=job.backend,
        runtime=job.runtime,
        options=carried_options(job.options, **options),
        attempt=job.attempt + 1,
        previous_job_id=job.id,
        batch_id=job.batch_id,
        rule_id=None,
    )
    session.add(row)
    session.flush()
    if dest is not None and dest.level == Level.ANALYSIS:
        dest.job_id = row.id
    record_created(session, row, retry_of=job.id, reason=reason)
    return row


def timestamps(job: Job) -> dict[str, datetime]:
    """When the job first entered each state."""
    out: dict[str, datetime] = {}
    for event in job.events:
        out.setdefault(event.to_state, event.time)
    return out
