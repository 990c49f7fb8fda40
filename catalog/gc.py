"""Garbage collection of blobs that no file row references."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from catalog import audit
from catalog.blobstore import GcReport
from catalog.models import File, IngestItem, Job

if TYPE_CHECKING:
    from catalog.catalog import Catalog


class ReferencedBlobs:
    """The set of sha256 digests the files table references, held as 32-byte keys."""

    def __init__(self, digests: set[bytes]) -> None:
        self._digests = digests

    def __contains__(self, sha256: object) -> bool:
        return isinstance(sha256, str) and bytes.fromhex(sha256) in self._digests

    def __len__(self) -> int:
        return len(self._digests)


def referenced_blobs(cat: Catalog) -> ReferencedBlobs:
    """Every digest referenced by a file version, a stored job log, or an ingest item still
    waiting to be packed (its series' zip fragment) (streamed)."""
    digests: set[bytes] = set()
    with cat.db.session(readonly=True) as session:
        rows = session.execute(select(File.sha256).distinct().execution_options(yield_per=10_000))
        for (sha,) in rows:
            digests.add(bytes.fromhex(sha))
        logs = session.execute(select(Job.log_sha256).where(Job.log_sha256.is_not(None)).distinct())
        for (log_sha,) in logs:
            if log_sha:
                digests.add(bytes.fromhex(log_sha))
        fragments = session.execute(
            select(IngestItem.sha256)
            .where(IngestItem.status == "scanned", IngestItem.sha256.is_not(None))
            .distinct()
        )
        for (fragment,) in fragments:
            if fragment:
                digests.add(bytes.fromhex(fragment))
    return ReferencedBlobs(digests)


def collect_garbage(cat: Catalog, grace_seconds: float = 3600.0) -> GcReport:
    """Delete unreferenced blobs older than ``grace_seconds`` and audit the run.

    The grace period protects uploads in flight: their blob is durable before their file row
    is committed, so a young unreferenced blob may be about to become referenced.
    """
    report = cat.blobs.gc(referenced_blobs(cat), grace_seconds=grace_seconds)
    with cat.db.session() as session:
        audit.record(
            session,
            cat.actor,
            "store.gc",
            "store",
            None,
            None,
            deleted=report.deleted,
            bytes_freed=report.bytes_freed,
        )
    return report
