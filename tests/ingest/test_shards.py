"""The listing's shards: committed by page before they are handed out, resumable at any point
(SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from catalog.catalog import Catalog
from ingest import runs
from ingest.options import IngestOptions
from ingest.shards import Lister
from ingest.start import start_ingest

FILES = 2_500  # two and a half listing pages
SHARD = 300


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for n in range(FILES):
        path = root / f"d{n // 500}" / f"f{n:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (n % 7 + 1))
    return root


def _lister(cat: Catalog, run_id: int) -> Lister:
    run = runs.load_run(cat.db, run_id)
    options = IngestOptions.from_json(run.options)
    assert run.project_id is not None
    return Lister(cat.db, run_id, options, options.open_source(), run.project_id, dict(run.stats))


def test_a_stopped_listing_resumes_with_every_object_once(catalog: Catalog, folder: Path) -> None:
    catalog.create_group("lab")
    options = IngestOptions(kind="dicom", source=str(folder), group="lab", project="p",
                            shard_files=SHARD)  # fmt: skip
    run_id = start_ingest(catalog, options)

    taken = list(islice(_lister(catalog, run_id).shards(), 2))  # then the process died
    saved = runs.load_run(catalog.db, run_id).stats
    pending = list(runs.pending_shards(catalog.db, run_id))
    # The first page's three full shards were committed together; the 100 objects after them
    # were listed but not cut, so the saved position is the last key of the third shard.
    assert [seq for seq, _ in pending] == [0, 1, 2]
    assert [objs for _, objs in pending[:2]] == [objs for _, objs in taken]
    assert saved["listed_through"] == pending[-1][1][-1][0]
    assert saved["listed"] == 3 * SHARD and saved["next_seq"] == 3

    resumed = list(_lister(catalog, run_id).shards())
    keys = [obj[0] for _, objs in pending + resumed for obj in objs]
    expected = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.bin"))
    assert sorted(keys) == expected and len(keys) == len(set(keys)) == FILES
    assert [seq for seq, _ in pending + resumed] == list(range(len(pending) + len(resumed)))
    final = runs.load_run(catalog.db, run_id).stats
    assert final["listing_done"] and final["listed"] == FILES
    assert final["listed_bytes"] == sum(p.stat().st_size for p in folder.rglob("*.bin"))


def test_objects_an_earlier_run_stored_are_recorded_in_bounded_batches(
    catalog: Catalog, folder: Path
) -> None:
    catalog.create_group("lab")
    options = IngestOptions(kind="dicom", source=str(folder), group="lab", project="p",
                            shard_files=SHARD, skip_existing=True)  # fmt: skip
    earlier = start_ingest(catalog, options)
    listed = [obj for _, objs in _lister(catalog, earlier).shards() for obj in objs]
    with catalog.db.session() as session:
        stored = [{"key": k, "size": s, "etag": e, "status": "stored"} for k, s, e in listed]
        runs.insert_items(session, earlier, 0, stored)

    again = start_ingest(catalog, options)
    lister = _lister(catalog, again)
    held: list[int] = []
    commit = lister._commit

    def watched_commit() -> Iterator[tuple[int, list[list[Any]]]]:
        held.append(sum(len(records) for _seq, _shard, records in lister._cuts))
        return commit()

    lister._commit = watched_commit  # type: ignore[method-assign]
    assert list(lister.shards()) == []  # nothing new to read
    assert max(held) <= 4 * SHARD  # one page's records at most, never the whole listing
    with catalog.db.session(readonly=True) as session:
        assert runs.counts_by_status(session, again) == {
            "skipped": [FILES, sum(obj[1] for obj in listed)]
        }
    stats = runs.load_run(catalog.db, again).stats
    assert stats["done"] == stats["listed"] == FILES
