"""Streaming a source's listing into persisted shards of N files or M bytes.

The listing is paginated and consumed lazily; each shard is committed (with the key the
listing has reached at its end) before it is handed out, so a resumed ingest lists on from
that key and never loses or repeats an object.  The shards of one page of the listing are
committed together.  Objects that need no work are recorded as items at once:
with ``skip_existing``, those an earlier run of the same source already stored; in a folder
ingest, paths that do not fit the template.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any

from catalog.db import Database
from ingest import runs
from ingest.options import IngestOptions
from ingest.sources import Source, SourceObject, filtered
from ingest.templates import FolderTemplate

_PAGE = 1000


class Lister:
    """Lists new shards of a run; ``stats`` is the run's (committed) stats dict, updated."""

    def __init__(
        self,
        db: Database,
        run_id: int,
        options: IngestOptions,
        source: Source,
        project_id: int,
        stats: dict[str, Any],
    ) -> None:
        self.db = db
        self.run_id = run_id
        self.options = options
        self.source = source
        self.project_id = project_id
        self.stats = stats
        self.template: FolderTemplate | None = (
            options.folder_template() if options.kind == "folder" else None
        )
        self._shard: list[list[Any]] = []
        self._shard_bytes = 0
        self._records: list[dict[str, Any]] = []
        # Listed since the last cut: the last key, how many objects, their bytes.
        self._through: str | None = None
        self._listed = 0
        self._listed_bytes = 0
        self._cuts: list[tuple[int, list[list[Any]], list[dict[str, Any]]]] = []

    def shards(self) -> Iterator[tuple[int, list[list[Any]]]]:
        """``(seq, objects)`` of each new shard, committed before it is yielded: the shards
        cut from one page of the listing are committed together, in one transaction."""
        if self.stats.get("listing_done"):
            return
        listing = filtered(
            self.source.iter_objects(self.stats.get("listed_through")), self.options.key_filter()
        )
        while page := list(islice(listing, _PAGE)):
            known = self._known(page)
            for obj in page:
                if (obj.key, obj.size, obj.etag) in known:
                    self._records.append(_item(obj, "skipped", "stored by an earlier ingest"))
                else:
                    self._add(obj)
                self._through = obj.key
                self._listed += 1
                self._listed_bytes += obj.size
                if (
                    len(self._shard) >= self.options.shard_files
                    or self._shard_bytes >= self.options.shard_bytes
                    or len(self._records) >= self.options.shard_files
                ):
                    self._cut()
            yield from self._commit()
        self._cut()
        self.stats["listing_done"] = True
        yield from self._commit()

    def _known(self, page: list[SourceObject]) -> set[tuple[str, int, str | None]]:
        if not self.options.skip_existing:
            return set()
        with self.db.session(readonly=True) as session:
            return runs.known_objects(
                session, self.source.url, self.project_id, [obj.key for obj in page]
            )

    def _add(self, obj: SourceObject) -> None:
        entry: list[Any] = [obj.key, obj.size, obj.etag]
        if self.template is not None:
            overrides = {"subject": self.options.subject, "session": self.options.session}
            place = self.template.place(obj.key, overrides)
            if place is None:
                self._records.append(_item(obj, "skipped", "does not match the template"))
                return
            entry += [place.subject, place.session, place.acquisition, place.name]
        self._shard.append(entry)
        self._shard_bytes += obj.size

    def _cut(self) -> None:
        """End the shard being filled: it, the records listed with it and the listing's
        position and counts up to here wait for :meth:`_commit` (``stats`` takes them now:
        nothing saves it before that commit)."""
        shard, records, stats = self._shard, self._records, self.stats
        self._shard, self._shard_bytes, self._records = [], 0, []
        seq = int(stats.get("next_seq", 0))
        if shard:
            stats["next_seq"] = seq + 1
        self._cuts.append((seq, shard, records))
        if self._through is not None:
            stats["listed_through"] = self._through
        stats["listed"] = stats.get("listed", 0) + self._listed
        stats["listed_bytes"] = stats.get("listed_bytes", 0) + self._listed_bytes
        stats["done"] = stats.get("done", 0) + len(records)
        stats["done_bytes"] = stats.get("done_bytes", 0) + sum(r["size"] for r in records)
        self._listed = self._listed_bytes = 0

    def _commit(self) -> Iterator[tuple[int, list[list[Any]]]]:
        """Commit the cut shards and records with the stats in one transaction, then yield
        the shards."""
        cuts, self._cuts = self._cuts, []
        if not cuts and not self.stats.get("listing_done"):
            return
        with self.db.session() as session:
            for seq, shard, records in cuts:
                if shard:
                    runs.add_shard(session, self.run_id, seq, shard)
                runs.insert_items(session, self.run_id, -1, records)
            runs.save_stats(session, self.run_id, self.stats)
        for seq, shard, _records in cuts:
            if shard:
                yield seq, shard


def _item(obj: SourceObject, status: str, reason: str) -> dict[str, Any]:
    return {
        "key": obj.key,
        "size": obj.size,
        "etag": obj.etag,
        "status": status,
        "detail": {"reason": reason},
    }
