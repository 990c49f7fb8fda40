"""Streaming a source's listing into persisted shards of N files or M bytes.

The listing is paginated and consumed lazily; each shard is committed (with the key the
listing has reached) before it is handed out, so a resumed ingest lists on from that key and
never loses or repeats an object.  Objects that need no work are recorded as items at once:
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

    def shards(self) -> Iterator[tuple[int, list[list[Any]]]]:
        """``(seq, objects)`` of each new shard, committed before it is yielded."""
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
                self.stats["listed_through"] = obj.key
                self.stats["listed"] = self.stats.get("listed", 0) + 1
                self.stats["listed_bytes"] = self.stats.get("listed_bytes", 0) + obj.size
                if (
                    len(self._shard) >= self.options.shard_files
                    or self._shard_bytes >= self.options.shard_bytes
                ):
                    yield from self._flush()
        self.stats["listing_done"] = True
        yield from self._flush()

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

    def _flush(self) -> Iterator[tuple[int, list[list[Any]]]]:
        shard, records = self._shard, self._records
        if not shard and not records and not self.stats.get("listing_done"):
            return
        seq = int(self.stats.get("next_seq", 0))
        skipped = len(records)
        with self.db.session() as session:
            if shard:
                runs.add_shard(session, self.run_id, seq, shard)
            runs.insert_items(session, self.run_id, -1, records)
            self.stats["next_seq"] = seq + 1 if shard else seq
            done = self.stats.setdefault("done", 0) + skipped
            self.stats["done"] = done
            self.stats["done_bytes"] = self.stats.get("done_bytes", 0) + sum(
                r["size"] for r in records
            )
            runs.save_stats(session, self.run_id, self.stats)
        self._shard, self._shard_bytes, self._records = [], 0, []
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
