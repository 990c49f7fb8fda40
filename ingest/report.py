"""Reports of an ingest: summary (stage times, counts by status), every problem with its
source path and reason (text, JSON or CSV), the de-id log, and a dry run's plan.

Problems and plan rows are streamed from the catalog a page at a time.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from sqlalchemy import func, select

from catalog.bulk import lookup_ancestors
from catalog.db import Database
from catalog.models import IngestItem
from ingest import runs
from ingest.containers import ContainerResolver
from ingest.dicom import zip_name
from ingest.options import IngestOptions
from ingest.writer import current_files

PROBLEMS = ("error", "conflict", "duplicate", "skipped")
_PAGE = 1000


def summary(db: Database, run_id: int) -> dict[str, Any]:
    """The run's state, options, stage timings, counts by status, rate, hazards, verify."""
    run = runs.load_run(db, run_id)
    with db.session(readonly=True) as session:
        counts = runs.counts_by_status(session, run_id)
    stats = run.stats
    elapsed = float(stats.get("finished") or stats.get("heartbeat") or 0) - float(
        stats.get("started") or 0
    )
    files = sum(n for n, _size in counts.values())
    size = sum(b for _n, b in counts.values())
    return {
        "id": run.id,
        "state": run.state,
        "kind": run.kind,
        "source": run.source,
        "created_by": run.created_by,
        "options": run.options,
        "timings": stats.get("timings", {}),
        "counts": {status: {"files": n, "bytes": b} for status, (n, b) in sorted(counts.items())},
        "files": files,
        "bytes": size,
        "elapsed_s": round(max(0.0, elapsed), 3),
        "files_per_s": round(files / elapsed, 1) if elapsed > 0 else None,
        "containers_created": stats.get("containers_created"),
        "hazard_count": stats.get("hazard_count", 0),
        "hazards": stats.get("hazards", []),
        "verify": stats.get("verify"),
        "error": stats.get("error"),
    }


def problems(db: Database, run_id: int) -> Iterator[tuple[str, str, str]]:
    """``(source key, status, reason)`` of every item that was not stored or unchanged."""
    last = 0
    while True:
        with db.session(readonly=True) as session:
            rows = session.execute(
                select(IngestItem.id, IngestItem.key, IngestItem.status, IngestItem.detail)
                .where(
                    IngestItem.run_id == run_id,
                    IngestItem.status.in_(PROBLEMS),
                    IngestItem.id > last,
                )
                .order_by(IngestItem.id)
                .limit(_PAGE)
            ).all()
        if not rows:
            return
        for _id, key, status, detail in rows:
            detail = detail or {}
            yield key, status, str(detail.get("error") or detail.get("reason") or "")
        last = rows[-1][0]


def deid_log(db: Database, run_id: int) -> Iterator[tuple[str, list[str]]]:
    """``(source key, changes)`` for every item the de-id profile changed."""
    last = 0
    while True:
        with db.session(readonly=True) as session:
            rows = session.execute(
                select(IngestItem.id, IngestItem.key, IngestItem.detail)
                .where(IngestItem.run_id == run_id, IngestItem.id > last)
                .order_by(IngestItem.id)
                .limit(_PAGE)
            ).all()
        if not rows:
            return
        for _id, key, detail in rows:
            if (detail or {}).get("deid"):
                yield key, list(detail["deid"])
        last = rows[-1][0]


def write_text(report: dict[str, Any], out: TextIO, db: Database) -> None:
    out.write(
        f"ingest {report['id']}: {report['state']}  ({report['kind']} from {report['source']})\n"
    )
    out.write(f"  {report['files']:,} files, {report['bytes'] / 1e6:,.1f} MB")
    if report["files_per_s"]:
        out.write(f" in {report['elapsed_s']:.1f} s ({report['files_per_s']:,.0f} files/s)")
    out.write("\n  stages: ")
    out.write(", ".join(f"{k} {v:.1f} s" for k, v in report["timings"].items()) or "-")
    out.write("\n  status: ")
    out.write(", ".join(f"{k} {v['files']:,}" for k, v in report["counts"].items()) or "-")
    out.write("\n")
    if report["hazard_count"]:
        out.write(f"  hazards: {report['hazard_count']:,} files\n")
        for hazard in report["hazards"]:
            out.write(f"    {hazard['key']}: {'; '.join(hazard['hazards'])}\n")
    if report["verify"]:
        verify = report["verify"]
        out.write(
            f"  verify: {verify['checked']:,} stored files, {len(verify['failed'])} with PHI\n"
        )
    if report["error"]:
        out.write(f"  failed: {report['error']}\n")
    for key, status, reason in problems(db, report["id"]):
        out.write(f"  {status:9} {key}: {reason}\n")


def write_json(report: dict[str, Any], out: TextIO, db: Database) -> None:
    """The summary plus every problem, streamed as one JSON document."""
    body = json.dumps(report, indent=2, default=str)
    out.write(body[: body.rstrip().rfind("}")].rstrip() + ',\n  "problems": [')
    for index, (key, status, reason) in enumerate(problems(db, report["id"])):
        item = json.dumps({"path": key, "status": status, "reason": reason})
        out.write(("," if index else "") + "\n    " + item)
    out.write("\n  ]\n}\n")


def write_csv(db: Database, run_id: int, out: TextIO) -> None:
    writer = csv.writer(out)
    writer.writerow(["path", "status", "reason"])
    for row in problems(db, run_id):
        writer.writerow(row)


@dataclass(frozen=True)
class PlanRow:
    """One target container of a dry run: its labels, what exists, files and bytes."""

    subject: str | None
    session: str | None
    acquisition: str | None
    create: tuple[str, ...]
    files: int
    bytes: int
    existing_names: int


def plan(db: Database, run_id: int) -> Iterator[PlanRow]:
    """What a dry run found, per target container (labels before UID disambiguation)."""
    run = runs.load_run(db, run_id)
    assert run.project_id is not None
    options = IngestOptions.from_json(run.options)
    with db.session(readonly=True) as session:
        root = lookup_ancestors(session, [run.project_id])[run.project_id]
        resolver = ContainerResolver(run.project_id, root)
        groups = session.execute(
            select(
                IngestItem.subject,
                IngestItem.session,
                IngestItem.acquisition,
                func.count(),
                func.coalesce(func.sum(IngestItem.size), 0),
            )
            .where(IngestItem.run_id == run_id, IngestItem.status == "scanned")
            .group_by(IngestItem.subject, IngestItem.session, IngestItem.acquisition)
            .order_by(IngestItem.subject, IngestItem.session, IngestItem.acquisition)
        ).all()
        for subject, sess, acquisition, files, size in groups:
            labels = [label for label in (subject, sess, acquisition) if label]
            path = tuple((label, None) for label in labels)
            found = resolver.resolve(session, [path], create=False)
            levels = ("subject", "session", "acquisition")
            create = tuple(levels[i] for i in range(len(path)) if found.get(path[: i + 1]) is None)
            existing = 0
            place = found.get(path)
            if place is not None:
                names = (
                    {zip_name(str(acquisition))}
                    if options.packed
                    else set(_names(session, run_id, subject, sess, acquisition))
                )
                existing = len(current_files(session, {(place[0], n) for n in names}))
            yield PlanRow(subject, sess, acquisition, create, int(files), int(size), existing)


def _names(
    session: Any, run_id: int, subject: str | None, sess: str | None, acq: str | None
) -> Any:
    return session.scalars(
        select(IngestItem.name).where(
            IngestItem.run_id == run_id,
            IngestItem.status == "scanned",
            IngestItem.subject == subject,
            IngestItem.session == sess,
            IngestItem.acquisition == acq,
        )
    )


def write_plan(db: Database, run_id: int, out: TextIO) -> None:
    totals = [0, 0, 0]
    for row in plan(db, run_id):
        where = " / ".join(label for label in (row.subject, row.session, row.acquisition) if label)
        create = f"create {', '.join(row.create)}" if row.create else "exists"
        conflicts = f", {row.existing_names} name(s) exist" if row.existing_names else ""
        out.write(
            f"  {where}: {row.files:,} files, {row.bytes / 1e6:,.1f} MB [{create}{conflicts}]\n"
        )
        totals[0] += row.files
        totals[1] += len(row.create)
        totals[2] += row.existing_names
    out.write(
        f"plan: {totals[0]:,} files, {totals[1]:,} containers to create, {totals[2]:,} conflicts\n"
    )
