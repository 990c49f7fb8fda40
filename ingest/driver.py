"""The ingest driver: feeds shards to Dask workers and writes their results in batches.

Phases (``stats.phase``): ``scan`` (list, then per shard: store files, or for packed DICOM
store one zip fragment per series and shard), ``pack`` (per series: its zip, which is its
one fragment unless the series was split across shards; see :mod:`ingest.packing`),
``verify`` (re-read stored files, de-identified runs only).  Each batch of results is one
transaction: catalog rows, item rows, shard states and run stats together, plus one audit
event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

from distributed import Client
from sqlalchemy import select

from catalog import audit
from catalog.bulk import lookup_ancestors
from catalog.catalog import Catalog
from catalog.errors import GearbrokerError
from catalog.models import IngestItem
from ingest import runs, tasks
from ingest.containers import ContainerResolver, Path
from ingest.options import IngestOptions
from ingest.pipeline import pump, worker_count
from ingest.shards import Lister
from ingest.writer import FileRecord, Writer

#: Results are committed after FLUSH_S seconds at most (or ``batch_files`` files).
FLUSH_S = 2.0
HAZARD_CAP = 200
VERIFY_CHUNK = 50
FINAL = frozenset({"stored", "unchanged", "skipped", "duplicate", "conflict", "error"})

ProgressCallback = Callable[[dict[str, Any]], None]


class DeidVerifyError(GearbrokerError):
    """PHI named by the de-identification profile survived in stored files."""


@dataclass
class Driver:
    """Runs (or resumes) one IngestRun on a Dask client."""

    catalog: Catalog
    run: runs.RunInfo
    client: Client | None
    store_url: str
    store_options: dict[str, Any]
    on_progress: ProgressCallback | None = None

    def __post_init__(self) -> None:
        self.options = IngestOptions.from_json(self.run.options)
        self.db = self.catalog.db
        self.stats: dict[str, Any] = dict(self.run.stats)
        self.stats.setdefault("started", time.time())
        self.stats.setdefault("timings", {})
        self.stats.setdefault("phase", "scan")
        assert self.run.project_id is not None
        self.project_id = self.run.project_id
        with self.db.session(readonly=True) as session:
            root = lookup_ancestors(session, [self.project_id])[self.project_id]
        self.resolver = ContainerResolver(self.project_id, root)
        self.writer = Writer(
            self.resolver,
            f"ingest-{self.run.id}",
            skip_existing=self.options.skip_existing,
            detect_duplicates=self.options.detect_duplicates,
        )
        self.spec = tasks.WorkSpec(
            source=self.options.open_source(),
            store_url=self.store_url,
            store_options=dict(self.store_options),
            mapping=self.options.mapping(),
            profile=self.options.profile(),
        )
        self._buffer: list[tuple[int, list[dict[str, Any]]]] = []
        self._checked = 0
        self._created_seen = 0
        self._buffered = 0
        self._flushed = time.monotonic()

    # -- the run ------------------------------------------------------------------------

    def execute(self) -> str:
        """Run every remaining phase; returns the final state (``done`` or ``planned``)."""
        try:
            if self.stats["phase"] == "scan":
                self._timed("scan", self._scan_phase)
                self._set_phase(
                    "pack" if self.options.packed and not self.options.dry_run else "verify"
                )
            if self.stats["phase"] == "pack":
                from ingest.packing import Packer

                self._timed("pack", Packer(self).run)
                self._set_phase("verify")
            if self.stats["phase"] == "verify" and self.options.verify and not self.options.dry_run:
                self._timed("verify", self._verify)
            state = runs.PLANNED if self.options.dry_run else runs.DONE
            self._finish(state)
            return state
        except KeyboardInterrupt:
            self._finish(runs.INTERRUPTED)
            raise
        except DeidVerifyError:
            self._finish(runs.FAILED)
            raise
        except Exception as exc:
            self.stats["error"] = str(exc)
            self._finish(runs.FAILED)
            raise

    def _timed(self, name: str, step: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            step()
        finally:
            timings = self.stats["timings"]
            timings[name] = round(timings.get(name, 0.0) + time.monotonic() - started, 3)

    def _set_phase(self, phase: str) -> None:
        self.stats["phase"] = phase
        with self.db.session() as session:
            runs.save_stats(session, self.run.id, self.stats)

    def _finish(self, state: str) -> None:
        self.stats["finished"] = time.time()
        self.stats["phase"] = state
        with self.db.session() as session:
            counts = runs.counts_by_status(session, self.run.id)
            self.stats["counts"] = counts
            runs.save_stats(session, self.run.id, self.stats, state=state)
            audit.record(
                session,
                self.catalog.actor,
                "ingest.finish",
                "ingest",
                self.run.id,
                self.run.source,
                state=state,
                counts=counts,
            )
        self._progress()

    # -- scan / single-phase store ------------------------------------------------------

    def _scan_phase(self) -> None:
        lister = Lister(
            self.db, self.run.id, self.options, self.spec.source, self.project_id, self.stats
        )
        payloads = chain(runs.pending_shards(self.db, self.run.id), lister.shards())
        if self.options.kind == "folder":
            task: Callable[..., list[dict[str, Any]]] = tasks.store_folder
        elif self.options.dry_run:
            task = tasks.scan_shard
        elif self.options.packed:
            task = tasks.scan_pack_shard
        else:
            task = tasks.store_dicom
        for seq, results in self._results(task, payloads):
            self._buffer.append((seq, results))
            self._buffered += len(results)
            if (
                self._buffered >= self.options.batch_files
                or time.monotonic() - self._flushed > FLUSH_S
            ):
                self._commit()
        self._commit()

    def _results(
        self, task: Callable[..., list[dict[str, Any]]], payloads: Iterator[tuple[int, Any]]
    ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        if self.options.dry_run and self.options.kind == "folder":
            for seq, objects in payloads:  # placement came from the paths: nothing to read
                yield seq, [_placed(obj) for obj in objects]
            return
        yield from pump(self._client(), task, self.spec, payloads, self.in_flight())

    def _client(self) -> Client:
        if self.client is None:
            raise GearbrokerError("this ingest step needs a Dask client")
        return self.client

    def in_flight(self) -> int:
        """Tasks kept submitted at once: enough to keep every worker busy."""
        return 3 * worker_count(self._client()) + 2

    def _commit(self) -> None:
        if not self._buffer:
            return
        buffer, self._buffer, self._buffered = self._buffer, [], 0
        counts: dict[str, int] = {}
        with self.db.session() as session:
            for seq, results in buffer:
                self._write_results(session, seq, results, counts)
            runs.finish_shards(session, self.run.id, [seq for seq, _ in buffer])
            self._count(counts, sum(len(r) for _, r in buffer), buffer)
            self.batch_audit(session, counts)
            runs.save_stats(session, self.run.id, self.stats)
        self._flushed = time.monotonic()
        self._progress()

    def _write_results(
        self, session: Any, seq: int, results: list[dict[str, Any]], counts: dict[str, int]
    ) -> None:
        to_write = [r for r in results if r["status"] == "stored"]
        outcomes = self.writer.write(session, [self.file_record(r) for r in to_write])
        for record, outcome in zip(to_write, outcomes, strict=True):
            record["status"] = outcome.status
            if outcome.reason:
                record["detail"] = {**record.get("detail", {}), "reason": outcome.reason}
        for record in results:
            counts[record["status"]] = counts.get(record["status"], 0) + 1
            self.note_hazards(record["key"], record.get("detail", {}).get("hazards"))
            if record["status"] != "scanned":  # the file's info holds it, or it was dropped
                record.get("detail", {}).pop("header", None)
        runs.insert_items(session, self.run.id, seq, results)

    def _count(
        self, counts: dict[str, int], files: int, buffer: list[tuple[int, list[dict[str, Any]]]]
    ) -> None:
        final = sum(n for status, n in counts.items() if status in FINAL)
        size = sum(r["size"] for _, results in buffer for r in results if r["status"] in FINAL)
        scanned_size = sum(r["size"] for _, results in buffer for r in results)
        stats = self.stats
        stats["scanned"] = stats.get("scanned", 0) + files
        stats["done"] = stats.get("done", 0) + final
        stats["done_bytes"] = stats.get("done_bytes", 0) + size
        # Read and stored as a zip fragment: only the pack phase makes these files "done".
        stats["awaiting_pack"] = stats.get("awaiting_pack", 0) + files - final
        stats["awaiting_pack_bytes"] = stats.get("awaiting_pack_bytes", 0) + scanned_size - size
        stats["errors"] = stats.get("errors", 0) + counts.get("error", 0)

    def batch_audit(self, session: Any, counts: dict[str, int]) -> None:
        """One audit event per committed batch (never one per file)."""
        created = self.resolver.created - self._created_seen
        self._created_seen = self.resolver.created
        self.stats["containers_created"] = self.stats.get("containers_created", 0) + created
        audit.record(
            session,
            self.catalog.actor,
            "ingest.batch",
            "ingest",
            self.run.id,
            self.run.source,
            counts=counts,
            containers_created=created,
        )

    def note_hazards(self, key: str, hazards: list[str] | None) -> None:
        if hazards:
            self.stats["hazard_count"] = self.stats.get("hazard_count", 0) + 1
            listed = self.stats.setdefault("hazards", [])
            if len(listed) < HAZARD_CAP:
                listed.append({"key": key, "hazards": hazards})

    def file_record(self, result: dict[str, Any], name: str | None = None) -> FileRecord:
        """The catalog file for a stored result (a single file or a series' zip)."""
        detail = result.get("detail") or {}
        uids = detail.get("uids", {})
        path: Path = tuple(
            (label, uids.get(level))
            for level, label in (
                ("subject", result.get("subject")),
                ("session", result.get("session")),
                ("acquisition", result.get("acquisition")),
            )
            if label
        )
        info: dict[str, Any] = {}
        if "header" in detail:
            info["header"] = {"dicom": detail["header"]}
        if self.spec.profile is not None and (detail.get("deid") or self.options.kind == "dicom"):
            info["deid"] = self.spec.profile.record()
        return FileRecord(
            path=path,
            name=name or result["name"],
            sha256=result["sha256"],
            size=result["stored_size"],
            modality=detail.get("modality"),
            classification=detail.get("classification") or {},
            info=info,
        )

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(dict(self.stats))

    # -- verify -------------------------------------------------------------------------

    def _verify(self) -> None:
        failed: list[list[Any]] = []
        self._checked = 0
        work = pump(
            self._client(), tasks.verify_blobs, self.spec, self._digests(), self.in_flight()
        )
        for _tag, bad in work:
            failed += bad
        self.stats["verify"] = {"checked": self._checked, "failed": failed[:HAZARD_CAP]}
        if failed:
            raise DeidVerifyError(
                f"{len(failed)} stored file(s) still hold PHI the profile removes, e.g. "
                f"{failed[0][0]}: {', '.join(failed[0][1][:3])}"
            )

    def _digests(self) -> Iterator[tuple[int, list[str]]]:
        """Distinct digests the run stored, in chunks, streamed from the items."""
        last = ""
        index = 0
        while True:
            with self.db.session(readonly=True) as session:
                rows = list(
                    session.scalars(
                        select(IngestItem.sha256)
                        .where(
                            IngestItem.run_id == self.run.id,
                            IngestItem.status.in_(("stored", "unchanged")),
                            IngestItem.sha256 > last,
                        )
                        .distinct()
                        .order_by(IngestItem.sha256)
                        .limit(VERIFY_CHUNK)
                    )
                )
            if not rows:
                return
            chunk = [r for r in rows if r]
            self._checked += len(chunk)
            yield index, chunk
            index += 1
            last = rows[-1] or ""


def _placed(obj: list[Any]) -> dict[str, Any]:
    key, size, etag, subject, session, acquisition, name = obj
    return {
        "key": key,
        "size": size,
        "etag": etag,
        "status": "scanned",
        "subject": subject,
        "session": session,
        "acquisition": acquisition,
        "name": name,
        "detail": {},
    }
