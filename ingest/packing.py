"""Phase 2 of a packed DICOM ingest: every series becomes one ``.dicom.zip`` in its acquisition.

The scan phase already stored one zip fragment per series and shard; a series whose files
all sit in one fragment takes it as its zip, with no task.  Only series split across shards
are packed again, by tasks that re-read their members from the source.

Series are streamed out of the run's scanned items in ``group_key`` order (``<series
UID>|<study UID>``), a page at a time, so the driver's memory does not grow with the
archive.  Adjacent groups that share a series UID are the "same series in two studies"
hazard: reported and kept apart (one acquisition per study), or with ``strict_uid``
rejected.  With ``skip_existing`` a series whose zip already exists is skipped unread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from catalog.errors import StoreError
from catalog.models import IngestItem
from ingest import runs, tasks
from ingest.containers import Path
from ingest.dicom import zip_name
from ingest.pipeline import pump
from ingest.writer import current_files

if TYPE_CHECKING:
    from ingest.driver import Driver

_GROUP_PAGE = 200
FLUSH_S = 2.0
SAME_SERIES = "SeriesInstanceUID also in another study"
#: A series' members in its zip: by instance number, then name, then source key (as
#: :func:`ingest.tasks._member_order` sorts a fragment).
_ARCHIVE_ORDER = (func.coalesce(IngestItem.position, -1), IngestItem.name, IngestItem.key)


class Packer:
    """Plans, runs and commits the per-series pack tasks of one run."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.run_id = driver.run.id
        self.db = driver.db
        self._buffer: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
        self._buffered = 0
        self._flushed = time.monotonic()

    def run(self) -> None:
        client = self.driver._client()
        work = pump(
            client, tasks.pack_groups, self.driver.spec, self._bundles(), self.driver.in_flight()
        )
        for tags, results in work:
            self._add(tags, results)
        self._commit()

    def _add(self, tags: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
        """Buffer packed series; commit after ``batch_files`` files or FLUSH_S seconds."""
        self._buffer.append((tags, results))
        self._buffered += sum(t["files"] for t in tags)
        if (
            self._buffered >= self.driver.options.batch_files
            or time.monotonic() - self._flushed > FLUSH_S
        ):
            self._commit()

    # -- planning -------------------------------------------------------------------------

    def _bundles(self) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """``(tags, payload)`` per task: whole series, about ``shard_files`` files per task.
        A series held whole by one scan fragment is committed as it is, without a task."""
        tags: list[dict[str, Any]] = []
        payload: list[dict[str, Any]] = []
        files = 0
        for group in self._groups():
            tag = {
                "group_key": group["group_key"],
                "first": group["first"][0],
                "files": group["files"],
                "bytes": group["bytes"],
            }
            whole = self._whole_fragment(group)
            if whole is not None:
                self._add([tag], [whole])
                continue
            members = group["members"]
            tags.append(tag)
            payload.append({"group_key": group["group_key"], "members": [m[:4] for m in members]})
            files += len(members)
            if files >= self.driver.options.shard_files:
                yield tags, payload
                tags, payload, files = [], [], 0
        if payload:
            yield tags, payload

    def _whole_fragment(self, group: dict[str, Any]) -> dict[str, Any] | None:
        """The pack result of a series whose members all sit in one stored fragment (None
        when they are spread over several, or the fragment is gone): the first member of
        each name is packed, later ones (an identical copy scanned in another shard) are
        duplicates."""
        digest = group["fragment"]
        if digest is None:
            return None
        try:
            size = self.driver.spec.store().size(digest)
        except StoreError:
            return None
        seen: dict[str, str] = {}
        outcomes: list[list[Any]] = []
        for item_id, key, _size, name, _sha in group["members"] or ():
            if name in seen:
                outcomes.append([item_id, "duplicate", f"same instance as {seen[name]}"])
            else:
                seen[name] = key
        return {
            "group_key": group["group_key"],
            "sha256": digest,
            "stored_size": size,
            "members": len(seen) if group["members"] else group["files"],
            "outcomes": outcomes,
            "whole": True,
        }

    def _groups(self) -> Iterator[dict[str, Any]]:
        """Scanned series in key order; runs of one series UID over several studies are
        held back until complete, then reported (or rejected)."""
        same_series: list[dict[str, Any]] = []
        for group in self._scanned_groups():
            if same_series and _series(same_series[0]) != _series(group):
                yield from self._release(same_series)
                same_series = []
            same_series.append(group)
        yield from self._release(same_series)

    def _release(self, groups: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        if len(groups) > 1:
            for group in groups:
                self.driver.note_hazards(group["first"][1], [SAME_SERIES])
            if self.driver.options.strict_uid:
                self._reject(groups, f"{SAME_SERIES} (--strict-uid)")
                return
        yield from groups

    def _scanned_groups(self) -> Iterator[dict[str, Any]]:
        """Each scanned series, a page of series at a time: ``first`` (its first member's
        item id and key in archive order), ``files``, ``bytes``, ``fragment`` (the digest
        of the one fragment holding every member, else None), ``repeats`` (two members share
        a name) and ``members`` (item rows in
        archive order, read only for a series split over fragments or with repeated names;
        else None)."""
        last = ""
        while True:
            with self.db.session(readonly=True) as session:
                summaries = session.execute(
                    select(
                        IngestItem.group_key,
                        func.count(),
                        func.count(IngestItem.name.distinct()),
                        func.count(IngestItem.sha256),
                        func.min(IngestItem.sha256),
                        func.max(IngestItem.sha256),
                        func.coalesce(func.sum(IngestItem.size), 0),
                    )
                    .where(self._scanned(), IngestItem.group_key > last)
                    .group_by(IngestItem.group_key)
                    .order_by(IngestItem.group_key)
                    .limit(_GROUP_PAGE)
                ).all()
                if not summaries:
                    return
                found: list[dict[str, Any]] = [
                    {
                        "group_key": str(key),
                        "files": int(files),
                        "bytes": int(size),
                        "fragment": low if hashed == files and low == high else None,
                        "repeats": names != files,
                    }
                    for key, files, names, hashed, low, high, size in summaries
                ]
                keys = [g["group_key"] for g in found]
                firsts = self._firsts(session, keys)
                split = [g["group_key"] for g in found if g["fragment"] is None or g["repeats"]]
                members = self._members(session, split) if split else {}
            for group in found:
                group["first"] = firsts[group["group_key"]]
                group["members"] = members.get(group["group_key"])
            if self.driver.options.skip_existing:
                found = self._drop_existing(found)
            yield from found
            last = keys[-1]

    def _firsts(self, session: Session, keys: list[str]) -> dict[str, tuple[int, str]]:
        """``group_key -> (item id, key)`` of each series' first member in archive order."""
        rank = (
            func.row_number()
            .over(partition_by=IngestItem.group_key, order_by=_ARCHIVE_ORDER)
            .label("rank")
        )
        ranked = (
            select(IngestItem.group_key, IngestItem.id, IngestItem.key, rank)
            .where(self._scanned(), IngestItem.group_key.in_(keys))
            .subquery()
        )
        rows = session.execute(
            select(ranked.c.group_key, ranked.c.id, ranked.c.key).where(ranked.c.rank == 1)
        )
        return {str(group_key): (item_id, key) for group_key, item_id, key in rows}

    def _members(self, session: Session, keys: list[str]) -> dict[str, list[list[Any]]]:
        """``group_key -> [[item id, key, size, name, fragment], ...]`` in archive order."""
        rows = session.execute(
            select(
                IngestItem.id,
                IngestItem.key,
                IngestItem.size,
                IngestItem.name,
                IngestItem.group_key,
                IngestItem.sha256,
            )
            .where(self._scanned(), IngestItem.group_key.in_(keys))
            .order_by(IngestItem.group_key, *_ARCHIVE_ORDER)
        )
        groups: dict[str, list[list[Any]]] = {}
        for item_id, key, size, name, group_key, fragment in rows:
            groups.setdefault(str(group_key), []).append([item_id, key, size, name, fragment])
        return groups

    def _scanned(self) -> Any:
        return (IngestItem.run_id == self.run_id) & (IngestItem.status == "scanned")

    def _drop_existing(self, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Mark series whose zip already exists as skipped; return the others."""
        with self.db.session() as session:
            heads = self._heads(session, [g["first"][0] for g in groups])
            paths = [self._path(heads[g["first"][0]]) for g in groups]
            places = self.driver.resolver.resolve(session, paths, create=False)
            wanted = {}
            for group, path in zip(groups, paths, strict=True):
                place = places.get(path)
                if place is not None:
                    wanted[group["group_key"]] = (place[0], zip_name(path[-1][0]))
            existing = current_files(session, set(wanted.values()))
            skipped = [g for g in groups if wanted.get(g["group_key"]) in existing]
            runs.set_group_status(
                session, self.run_id, [(g["group_key"], "skipped", None) for g in skipped]
            )
            done = sum(g["files"] for g in skipped)
            self.driver.stats["done"] = self.driver.stats.get("done", 0) + done
            self.driver.stats["done_bytes"] = self.driver.stats.get("done_bytes", 0) + sum(
                g["bytes"] for g in skipped
            )
            runs.save_stats(session, self.run_id, self.driver.stats)
        return [g for g in groups if g not in skipped]

    def _reject(self, groups: list[dict[str, Any]], reason: str) -> None:
        with self.db.session() as session:
            for group in groups:
                session.execute(
                    update(IngestItem)
                    .where(self._scanned(), IngestItem.group_key == group["group_key"])
                    .values(status="error", detail={"error": reason})
                )
            files = sum(g["files"] for g in groups)
            self.driver.stats["done"] = self.driver.stats.get("done", 0) + files
            self.driver.stats["errors"] = self.driver.stats.get("errors", 0) + files
            runs.save_stats(session, self.run_id, self.driver.stats)

    # -- committing ---------------------------------------------------------------------

    def _commit(self) -> None:
        if not self._buffer:
            return
        buffer, self._buffer, self._buffered = self._buffer, [], 0
        counts: dict[str, int] = {}
        with self.db.session() as session:
            pairs = [(t, r) for tags, results in buffer for t, r in zip(tags, results, strict=True)]
            heads = self._heads(session, [t["first"] for t, _ in pairs])
            member_changes = [tuple(o) for _, r in pairs for o in r["outcomes"]]
            runs.set_item_status(session, member_changes)  # type: ignore[arg-type]
            for _item_id, status, _reason in member_changes:
                counts[status] = counts.get(status, 0) + 1
            packed = [(t, r) for t, r in pairs if r["sha256"]]
            records = []
            for tag, result in packed:
                head = heads[tag["first"]]
                stored = {**head, "sha256": result["sha256"], "stored_size": result["stored_size"]}
                records.append(self.driver.file_record(stored, zip_name(head["acquisition"])))
            outcomes = self.driver.writer.write(session, records)
            changes = []
            for (tag, result), outcome in zip(packed, outcomes, strict=True):
                changes.append((tag["group_key"], outcome.status, result["sha256"]))
                counts[outcome.status] = counts.get(outcome.status, 0) + result["members"]
            runs.set_group_status(session, self.run_id, changes)
            stats = self.driver.stats
            stats["packed"] = stats.get("packed", 0) + len(packed)
            repacked = sum(1 for _t, r in packed if not r.get("whole"))
            stats["repacked"] = stats.get("repacked", 0) + repacked
            stats["done"] = stats.get("done", 0) + sum(t["files"] for t, _ in pairs)
            stats["done_bytes"] = stats.get("done_bytes", 0) + sum(t["bytes"] for t, _ in pairs)
            stats["errors"] = stats.get("errors", 0) + counts.get("error", 0)
            self.driver.batch_audit(session, counts)
            runs.save_stats(session, self.run_id, stats)
        self._flushed = time.monotonic()
        self.driver._progress()

    def _heads(self, session: Session, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The first member of each series: its labels and header detail."""
        rows = session.execute(
            select(
                IngestItem.id,
                IngestItem.subject,
                IngestItem.session,
                IngestItem.acquisition,
                IngestItem.detail,
            ).where(IngestItem.id.in_(list(ids)))
        )
        return {
            item_id: {
                "subject": subject,
                "session": sess,
                "acquisition": acquisition,
                "detail": detail,
            }
            for item_id, subject, sess, acquisition, detail in rows
        }

    def _path(self, head: dict[str, Any]) -> Path:
        uids = (head.get("detail") or {}).get("uids", {})
        return (
            (head["subject"], uids.get("subject")),
            (head["session"], uids.get("session")),
            (head["acquisition"], uids.get("acquisition")),
        )


def _series(group: dict[str, Any]) -> str:
    return str(group["group_key"]).split("|", 1)[0]
