"""Uploading local files into the catalog and downloading them back out.

Upload order is what makes it safe to kill at any moment: every blob of a batch is written
durably to the store first, then one transaction creates the containers and file rows.  A
killed upload therefore leaves at worst unreferenced blobs, which ``store gc`` removes.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from catalog import audit, filetypes
from catalog.access import Actor
from catalog.blobstore import BlobInfo
from catalog.errors import ConflictError, InvalidInputError, NotFoundError, PathError
from catalog.models import ANCESTOR_COLUMNS, HIERARCHY, Container, File, Level, RoleName
from catalog.paths import escape_label, format_path, parse_path, validate_file_name
from catalog.rules import enqueue_rule_matches
from catalog.tree import ancestors, current_file, resolve

if TYPE_CHECKING:
    from catalog.catalog import Catalog

UPLOAD_BATCH = 200
_RETRIES = 6  # concurrent uploaders into one tree may clash at several levels in turn


@dataclass(frozen=True)
class UploadResult:
    """What happened to one uploaded file: ``new``, ``version`` (replaced) or ``unchanged``."""

    path: str
    file_id: int
    version: int
    status: str
    sha256: str
    size: int


def add_file_version(
    session: Session,
    actor: Actor,
    container: Container,
    name: str,
    blob: BlobInfo,
    *,
    type: str | None = None,
    mimetype: str | None = None,
    modality: str | None = None,
    classification: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    origin_type: str = "user",
    origin_id: str | None = None,
    queue_rules: bool = True,
) -> tuple[File, str]:
    """Add ``name`` to ``container`` (a new version if the name exists with other content).

    Returns the current file row and ``new`` / ``version`` / ``unchanged``.  The caller has
    checked permissions and owns the transaction; the blob must already be durable.  With
    ``queue_rules=False`` the caller queues the rule triggers itself (once per batch).
    """
    validate_file_name(name)
    detected_type, detected_mime = filetypes.detect(name)
    old = current_file(session, container.id, name)
    if old is not None and old.sha256 == blob.sha256:
        return old, "unchanged"
    version = 1
    if old is not None:
        old.current = False
        version = old.version + 1
        session.flush()
    row = File(
        container_id=container.id,
        name=name,
        version=version,
        current=True,
        size=blob.size,
        sha256=blob.sha256,
        mimetype=mimetype or detected_mime,
        type=type or detected_type,
        modality=modality,
        classification=classification or {},
        info=info or {},
        tags=tags or [],
        origin_type=origin_type,
        origin_id=origin_id or actor.username,
        **container.ancestor_ids(),
    )
    session.add(row)
    session.flush()
    if queue_rules:
        enqueue_rule_matches(session, [row], "file-added")
    audit.record(
        session,
        actor,
        "upload",
        "file",
        row.id,
        name,
        container_id=container.id,
        version=version,
        sha256=blob.sha256,
        size=blob.size,
    )
    return row, "new" if old is None else "version"


def plan_upload(sources: Sequence[Path], base_level: Level) -> list[tuple[tuple[str, ...], Path]]:
    """(relative container labels, local file) pairs; directories map onto lower levels."""
    room = len(HIERARCHY) - 1 - HIERARCHY.index(base_level)
    plan: list[tuple[tuple[str, ...], Path]] = []
    for src in sources:
        if src.is_file():
            plan.append(((), src))
        elif src.is_dir():
            for rel, path in _walk(src):
                if len(rel) > room:
                    raise InvalidInputError(
                        f"{path}: {len(rel)} folder levels below {src}, but only {room} "
                        f"hierarchy levels remain below a {base_level.value}"
                    )
                plan.append((rel, path))
        else:
            raise NotFoundError(f"no such file or directory: {src}")
    return plan


def _walk(root: Path) -> Iterator[tuple[tuple[str, ...], Path]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root).parts
        for name in sorted(filenames):
            yield tuple(rel), Path(dirpath) / name


def upload(cat: Catalog, sources: Sequence[Path], to: str) -> list[UploadResult]:
    """Upload files and directories (their contents map onto the levels below ``to``)."""
    parsed = parse_path(to)
    if parsed.file_name is not None or parsed.analysis is not None:
        raise PathError("--to names a container (group/project/subject/session/acquisition)")
    if parsed.anchor_id is not None:
        with cat.db.session(readonly=True) as session:
            base = resolve(session, to)
            assert isinstance(base, Container)
            labels = [c.label for c in [*ancestors(session, base), base]]
    else:
        labels = list(parsed.labels)
    if len(labels) < 2:
        raise PathError("upload destinations are projects or below: group/project[/...]")
    plan = plan_upload(sources, HIERARCHY[len(labels) - 1])
    results: list[UploadResult] = []
    for start in range(0, len(plan), UPLOAD_BATCH):
        batch = plan[start : start + UPLOAD_BATCH]
        blobs = [cat.blobs.put_file(path) for _rel, path in batch]
        results += _commit_batch(cat, labels, batch, blobs)
    return results


def _commit_batch(
    cat: Catalog,
    labels: list[str],
    batch: list[tuple[tuple[str, ...], Path]],
    blobs: list[BlobInfo],
) -> list[UploadResult]:
    for attempt in range(_RETRIES):
        try:
            with cat.db.session() as session:
                out: list[UploadResult] = []
                containers: dict[tuple[str, ...], Container] = {}
                added: list[File] = []
                for (rel, path), blob in zip(batch, blobs, strict=True):
                    key = tuple(labels) + rel
                    if key not in containers:
                        containers[key] = cat.ensure_path(session, key)
                    container = containers[key]
                    row, status = add_file_version(
                        session, cat.actor, container, path.name, blob, queue_rules=False
                    )
                    if status != "unchanged":
                        added.append(row)
                    out.append(
                        UploadResult(
                            format_path(list(key), file_name=row.name),
                            row.id,
                            row.version,
                            status,
                            row.sha256,
                            row.size,
                        )
                    )
                enqueue_rule_matches(session, added, "file-added")
                return out
        except sa_exc.IntegrityError as exc:  # a concurrent writer created the same row first
            if attempt == _RETRIES - 1:
                raise ConflictError(f"upload clashed with a concurrent change: {exc.orig}") from exc
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
    raise AssertionError("unreachable")


def download(cat: Catalog, path: str, dest: Path, overwrite: bool = False) -> list[Path]:
    """Copy a file, or every current file below a container, to ``dest``."""
    with cat.db.session(readonly=True) as session:
        obj = resolve(session, path)
        cat._require_obj(session, obj, RoleName.READ_ONLY)
        if isinstance(obj, File):
            target = dest / obj.name if dest.is_dir() else dest
            pairs = [(obj, target)]
        else:
            pairs = _subtree_targets(session, obj, dest)
    written = []
    for file, target in pairs:
        if target.exists() and not overwrite:
            raise ConflictError(f"{target} exists (use --overwrite)")
        target.parent.mkdir(parents=True, exist_ok=True)
        cat.blobs.fetch_to(file.sha256, target, link=False)
        written.append(target)
    with cat.db.session() as session:
        audit.record(
            session,
            cat.actor,
            "download",
            "file" if isinstance(obj, File) else obj.level,
            obj.id,
            path,
            files=[f.id for f, _ in pairs],
        )
    return written


def _subtree_targets(session: Session, root: Container, dest: Path) -> list[tuple[File, Path]]:
    level = Level(root.level)
    in_subtree: Any = Container.id == root.id
    file_filter: Any = File.container_id == root.id
    if level is not Level.ANALYSIS:
        column = ANCESTOR_COLUMNS[level]
        in_subtree = or_(in_subtree, getattr(Container, column) == root.id)
        file_filter = or_(file_filter, getattr(File, column) == root.id)
    nodes = {c.id: c for c in session.scalars(select(Container).where(in_subtree))}
    base = dest / escape_label(root.label)

    def folder(container_id: int) -> Path:
        parts: list[str] = []
        node = nodes[container_id]
        while node.id != root.id:
            parts.append(escape_label(node.label))
            if node.level == Level.ANALYSIS:
                parts.append("analyses")
            assert node.parent_id is not None
            node = nodes[node.parent_id]
        return base.joinpath(*reversed(parts))

    files = session.scalars(select(File).where(file_filter, File.current).order_by(File.id))
    return [(f, folder(f.container_id) / f.name) for f in files]
