"""Persistent state of an ingest: the IngestRun row, its shards and its items.

Everything a resumed ingest needs is here, committed together with the catalog writes it
describes: a shard is ``done`` in the same transaction that inserts its files and items, so
a killed ingest redoes exactly the uncommitted shards.  Nothing grows in Python memory with
the number of files: callers stream shards and items back out in pages.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from catalog.db import Database
from catalog.errors import ConflictError, NotFoundError
from catalog.models import IngestItem, IngestRun, IngestShard

#: Run states; ``planned`` ends a dry run.
RUNNING, DONE, FAILED, INTERRUPTED, PLANNED = "running", "done", "failed", "interrupted", "planned"
TERMINAL = frozenset({DONE, FAILED, INTERRUPTED, PLANNED})
#: A driver on another host that has not written for this long is presumed dead.
STALE_AFTER_S = 120.0
_PAGE = 200
#: The items' table, for Core statements (executemany without the ORM's per-row work).
_ITEMS = cast(Table, IngestItem.__table__)
_ITEM_COLUMNS = (
    "key", "size", "etag", "status", "group_key", "position", "subject", "session",
    "acquisition", "name", "sha256", "detail",
)  # fmt: skip


@dataclass(frozen=True)
class RunInfo:
    """A snapshot of an IngestRun row."""

    id: int
    source: str
    kind: str
    project_id: int | None
    state: str
    options: dict[str, Any]
    stats: dict[str, Any]
    created_by: str


def create_run(
    db: Database, source: str, kind: str, project_id: int, options: dict[str, Any], user: str
) -> int:
    """A new run (state ``running``, owned by this process)."""
    with db.session() as session:
        run = IngestRun(
            source=source,
            kind=kind,
            project_id=project_id,
            state=RUNNING,
            options=options,
            stats={"owner": _owner(), "heartbeat": time.time()},
            created_by=user,
        )
        session.add(run)
        session.flush()
        return run.id


def load_run(db: Database, run_id: int) -> RunInfo:
    with db.session(readonly=True) as session:
        run = session.get(IngestRun, run_id)
        if run is None:
            raise NotFoundError(f"no ingest run {run_id}")
        return RunInfo(
            run.id,
            run.source,
            run.kind,
            run.project_id,
            run.state,
            dict(run.options),
            dict(run.stats),
            run.created_by,
        )


def list_runs(db: Database, limit: int = 50) -> list[RunInfo]:
    with db.session(readonly=True) as session:
        ids = session.scalars(select(IngestRun.id).order_by(IngestRun.id.desc()).limit(limit))
        return [load_run(db, run_id) for run_id in ids]


def claim_run(db: Database, run_id: int) -> RunInfo:
    """Take over a run to resume it; ConflictError if a live driver still holds it."""
    with db.session() as session:
        run = session.get(IngestRun, run_id, with_for_update=True)
        if run is None:
            raise NotFoundError(f"no ingest run {run_id}")
        if run.state in (DONE, PLANNED):
            raise ConflictError(f"ingest {run_id} is {run.state}: nothing to resume")
        if run.state == RUNNING and driver_alive(dict(run.stats)):
            raise ConflictError(f"ingest {run_id} is running ({run.stats.get('owner')})")
        run.state = RUNNING
        run.stats = {**run.stats, "owner": _owner(), "heartbeat": time.time()}
    return load_run(db, run_id)


def driver_alive(stats: dict[str, Any]) -> bool:
    """Whether the driver recorded in ``stats`` still runs (pid check on this host)."""
    host, _, pid = str(stats.get("owner", "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return time.time() - float(stats.get("heartbeat", 0)) < STALE_AFTER_S


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def save_stats(
    session: Session, run_id: int, stats: dict[str, Any], state: str | None = None
) -> None:
    values: dict[str, Any] = {"stats": {**stats, "heartbeat": time.time()}}
    if state is not None:
        values["state"] = state
    session.execute(update(IngestRun).where(IngestRun.id == run_id).values(**values))


def add_shard(session: Session, run_id: int, seq: int, objects: Sequence[Sequence[Any]]) -> None:
    session.add(
        IngestShard(
            run_id=run_id,
            seq=seq,
            state="pending",
            files=len(objects),
            bytes=sum(int(obj[1]) for obj in objects),
            objects=[list(obj) for obj in objects],
        )
    )


def pending_shards(db: Database, run_id: int) -> Iterator[tuple[int, list[Any]]]:
    """``(seq, objects)`` of the run's uncommitted shards, in order, a page at a time."""
    last = -1
    while True:
        with db.session(readonly=True) as session:
            rows = session.execute(
                select(IngestShard.seq, IngestShard.objects)
                .where(
                    IngestShard.run_id == run_id,
                    IngestShard.state == "pending",
                    IngestShard.seq > last,
                )
                .order_by(IngestShard.seq)
                .limit(_PAGE)
            ).all()
        if not rows:
            return
        yield from ((seq, objects) for seq, objects in rows)
        last = rows[-1][0]


def finish_shards(session: Session, run_id: int, seqs: Sequence[int]) -> None:
    if seqs:
        session.execute(
            update(IngestShard)
            .where(IngestShard.run_id == run_id, IngestShard.seq.in_(list(seqs)))
            .values(state="done", objects=[])
        )


def insert_items(
    session: Session, run_id: int, shard: int, records: Sequence[dict[str, Any]]
) -> None:
    """One row per record (keys as in :data:`_ITEM_COLUMNS`; missing ones are NULL)."""
    if records:
        rows = [
            {"run_id": run_id, "shard": shard, **{c: r.get(c) for c in _ITEM_COLUMNS}}
            for r in records
        ]
        for row in rows:
            row["detail"] = row["detail"] or {}
        session.execute(insert(_ITEMS), rows)  # Core executemany


def set_group_status(
    session: Session, run_id: int, changes: Sequence[tuple[str, str, str | None]]
) -> None:
    """``(group_key, status, sha256)``: every still-scanned item of the group gets them (one
    statement executed for all the changes)."""
    if changes:
        session.execute(
            update(_ITEMS)
            .where(
                _ITEMS.c.run_id == run_id,
                _ITEMS.c.status == "scanned",
                _ITEMS.c.group_key == bindparam("g_key"),
            )
            .values(status=bindparam("g_status"), sha256=bindparam("g_sha256")),
            [{"g_key": k, "g_status": st, "g_sha256": sha} for k, st, sha in changes],
        )


def set_item_status(session: Session, changes: Sequence[tuple[int, str, str]]) -> None:
    """``(item id, status, reason)`` for single items (the reason goes to ``detail.error``)."""
    if changes:
        session.execute(
            update(_ITEMS)
            .where(_ITEMS.c.id == bindparam("i_id"))
            .values(status=bindparam("i_status"), detail=bindparam("i_detail")),
            [{"i_id": i, "i_status": st, "i_detail": {"error": r}} for i, st, r in changes],
        )


def counts_by_status(session: Session, run_id: int) -> dict[str, list[int]]:
    """``status -> [files, bytes]`` over the run's items."""
    rows = session.execute(
        select(IngestItem.status, func.count(), func.coalesce(func.sum(IngestItem.size), 0))
        .where(IngestItem.run_id == run_id)
        .group_by(IngestItem.status)
    )
    return {status: [int(n), int(size)] for status, n, size in rows}


def known_objects(
    session: Session, source: str, project_id: int, keys: Sequence[str]
) -> set[tuple[str, int, str | None]]:
    """``(key, size, etag)`` among ``keys`` that earlier runs of ``source`` into the project
    stored (or found unchanged)."""
    rows = session.execute(
        select(IngestItem.key, IngestItem.size, IngestItem.etag)
        .join(IngestRun, IngestRun.id == IngestItem.run_id)
        .where(
            IngestRun.source == source,
            IngestRun.project_id == project_id,
            IngestItem.key.in_(list(keys)),
            IngestItem.status.in_(("stored", "unchanged")),
        )
    )
    return {(key, int(size), etag) for key, size, etag in rows}
