"""Batched catalog writes of an ingest: containers in bulk, then file rows in bulk.

Per record the writer decides a status:

- ``stored``: a new file (or, without ``skip_existing``, a new version of a name whose
  content differs);
- ``unchanged``: the name exists with the same content (re-runs are idempotent);
- ``skipped``: the name exists with other content and ``skip_existing`` is set;
- ``duplicate``: this ingest already stored the same content under that name, or
  (``detect_duplicates``) the project holds the same content under another name;
- ``conflict``: this ingest already stored other content under that name.

The caller owns the transaction (the writer never commits) and audits the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from catalog import filetypes
from catalog.bulk import FileRow, bulk_insert_files
from catalog.models import File, utcnow
from ingest.containers import Ancestors, ContainerResolver, Path

_CHUNK = 500


@dataclass(frozen=True)
class FileRecord:
    """One file to write: its place below the project, name and stored blob."""

    path: Path
    name: str
    sha256: str
    size: int
    modality: str | None = None
    classification: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    status: str
    reason: str | None = None
    file_id: int | None = None


class Writer:
    """Writes FileRecords of one run into one project."""

    def __init__(
        self,
        resolver: ContainerResolver,
        origin: str,
        *,
        skip_existing: bool = False,
        detect_duplicates: bool = False,
    ) -> None:
        self.resolver = resolver
        self.origin = origin
        self.skip_existing = skip_existing
        self.detect_duplicates = detect_duplicates

    def write(self, session: Session, records: Sequence[FileRecord]) -> list[Outcome]:
        """Write ``records``; one Outcome each, in order."""
        if not records:
            return []
        places = self.resolver.resolve(session, [r.path for r in records])
        targets: list[tuple[int, Ancestors]] = []
        for record in records:
            place = places[record.path]
            assert place is not None
            targets.append(place)
        wanted = {(t[0], r.name) for t, r in zip(targets, records, strict=True)}
        current = current_files(session, wanted)
        same_content = (
            _project_shas(session, self.resolver.project_id, {r.sha256 for r in records})
            if self.detect_duplicates
            else {}
        )
        outcomes: list[Outcome] = []
        batch_names: dict[tuple[int, str], str] = {}
        batch_shas: dict[str, str] = {}
        new_rows: list[FileRow] = []
        versions: list[tuple[FileRecord, tuple[int, Ancestors], int, int]] = []
        for record, (cid, ancestors) in zip(records, targets, strict=True):
            outcome = self._decide(record, cid, current, batch_names, same_content, batch_shas)
            outcomes.append(outcome)
            if outcome.status != "stored":
                continue
            batch_names[(cid, record.name)] = record.sha256
            batch_shas.setdefault(record.sha256, record.name)
            old = current.get((cid, record.name))
            if old is None:
                new_rows.append(self._row(record, cid))
            else:
                versions.append((record, (cid, ancestors), old[0], old[2]))
        bulk_insert_files(session, new_rows, ancestors={cid: anc for cid, anc in targets})
        for record, target, old_id, old_version in versions:
            self._new_version(session, record, target, old_id, old_version)
        return outcomes

    def _decide(
        self,
        record: FileRecord,
        cid: int,
        current: dict[tuple[int, str], tuple[int, str, int, str | None]],
        batch_names: dict[tuple[int, str], str],
        same_content: dict[str, int],
        batch_shas: dict[str, str],
    ) -> Outcome:
        key = (cid, record.name)
        if key in batch_names:
            if batch_names[key] == record.sha256:
                return Outcome("duplicate", "same file as another of this ingest")
            return Outcome("conflict", f"{record.name}: other content already ingested")
        old = current.get(key)
        if old is not None:
            old_id, old_sha, _version, origin = old
            if origin == self.origin:
                if old_sha == record.sha256:
                    return Outcome("duplicate", "same file as another of this ingest", old_id)
                return Outcome("conflict", f"{record.name}: other content already ingested")
            if old_sha == record.sha256:
                return Outcome("unchanged", None, old_id)
            if self.skip_existing:
                return Outcome("skipped", f"{record.name} exists (--skip-existing)", old_id)
        if self.detect_duplicates:
            if record.sha256 in same_content:
                return Outcome("duplicate", f"same content as file {same_content[record.sha256]}")
            if record.sha256 in batch_shas:
                return Outcome("duplicate", f"same content as {batch_shas[record.sha256]}")
        return Outcome("stored")

    def _row(self, record: FileRecord, cid: int) -> FileRow:
        return FileRow(
            container_id=cid,
            name=record.name,
            size=record.size,
            sha256=record.sha256,
            modality=record.modality,
            classification=record.classification,
            info=record.info,
            origin_type="ingest",
            origin_id=self.origin,
        )

    def _new_version(
        self,
        session: Session,
        record: FileRecord,
        target: tuple[int, Ancestors],
        old_id: int,
        old_version: int,
    ) -> None:
        session.execute(update(File).where(File.id == old_id).values(current=False))
        ftype, mime = filetypes.detect(record.name)
        now = utcnow()
        session.execute(
            insert(File).values(
                container_id=target[0],
                name=record.name,
                version=old_version + 1,
                current=True,
                size=record.size,
                sha256=record.sha256,
                mimetype=mime,
                type=ftype,
                modality=record.modality,
                classification=record.classification,
                info=record.info,
                tags=[],
                origin_type="ingest",
                origin_id=self.origin,
                created=now,
                modified=now,
                **target[1],
            )
        )


def current_files(
    session: Session, keys: set[tuple[int, str]]
) -> dict[tuple[int, str], tuple[int, str, int, str | None]]:
    """Current files at ``(container id, name)``: id, sha256, version, origin id."""
    out: dict[tuple[int, str], tuple[int, str, int, str | None]] = {}
    by_container: dict[int, set[str]] = {}
    for cid, name in keys:
        by_container.setdefault(cid, set()).add(name)
    cids = sorted(by_container)
    for start in range(0, len(cids), _CHUNK):
        chunk = cids[start : start + _CHUNK]
        names = set().union(*(by_container[c] for c in chunk))
        rows = session.execute(
            select(File.container_id, File.name, File.id, File.sha256, File.version, File.origin_id)
            .where(File.container_id.in_(chunk), File.current)
            .where(File.name.in_(sorted(names)) if len(names) <= _CHUNK else File.current)
        )
        for cid, name, fid, sha, version, origin in rows:
            if name in by_container.get(cid, ()):
                out[(cid, name)] = (fid, sha, version, origin)
    return out


def _project_shas(session: Session, project_id: int, shas: set[str]) -> dict[str, int]:
    """sha256 -> id of a current file of the project with that content."""
    out: dict[str, int] = {}
    ordered = sorted(shas)
    for start in range(0, len(ordered), _CHUNK):
        rows = session.execute(
            select(File.sha256, File.id).where(
                File.project_id == project_id,
                File.current,
                File.sha256.in_(ordered[start : start + _CHUNK]),
            )
        )
        for sha, fid in rows:
            out.setdefault(sha, fid)
    return out
