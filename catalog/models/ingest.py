"""Ingest runs, their shards and the files they found (the state that makes resume work)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from catalog.models.base import Base, _Timestamps


class IngestRun(_Timestamps, Base):
    """One ingest (folder or bucket) with its options, shard states and counters."""

    __tablename__ = "ingest_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16), default="dicom")
    project_id: Mapped[int | None] = mapped_column(ForeignKey("containers.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(255))


class IngestShard(Base):
    """One shard of an ingest's listing: the objects a worker scans or stores together.

    ``objects`` holds the shard's ``[key, size, etag]`` triples, so a resumed ingest
    redispatches exactly the shards that were not committed (``state`` pending).
    """

    __tablename__ = "ingest_shards"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    files: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    objects: Mapped[list[Any]] = mapped_column(default=list)

    __table_args__ = (
        UniqueConstraint("run_id", "seq"),
        Index("ix_ingest_shards_run_state", "run_id", "state"),
    )


class IngestItem(Base):
    """What one ingest learned and did about one source object.

    ``status``: scanned (header read, waiting to be stored), stored, unchanged, skipped,
    duplicate or error.  ``group_key`` gathers the objects stored together (one series);
    ``detail`` holds target labels, header fields, hazards, de-id changes or the error.
    """

    __tablename__ = "ingest_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_runs.id", ondelete="CASCADE"))
    shard: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    etag: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    group_key: Mapped[str | None] = mapped_column(String(255))
    position: Mapped[int | None] = mapped_column(Integer)
    subject: Mapped[str | None] = mapped_column(String(255))
    session: Mapped[str | None] = mapped_column(String(255))
    acquisition: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(1024))
    sha256: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        Index("ix_ingest_items_run_status_group", "run_id", "status", "group_key"),
        Index("ix_ingest_items_key", "key"),
    )
