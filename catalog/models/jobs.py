"""Gears, rules and their trigger queue, batches, jobs and the job state history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from catalog.models.base import Base, JobState, JSONType, _Timestamps, utcnow


class Gear(Base):
    """An installed gear version; its manifest is kept verbatim."""

    __tablename__ = "gears"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(255), default="")
    manifest: Mapped[dict[str, Any]] = mapped_column()
    manifest_hash: Mapped[str] = mapped_column(String(64))
    image: Mapped[str | None] = mapped_column(String(1024))
    image_digest: Mapped[str | None] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (UniqueConstraint("name", "version"),)


class Batch(Base):
    """A set of jobs of one gear submitted together."""

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    gear_id: Mapped[int] = mapped_column(ForeignKey("gears.id"))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    created_by: Mapped[str] = mapped_column(String(255))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Rule(Base):
    """A project-scoped gear rule: when matching data arrives, run a gear."""

    __tablename__ = "rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("containers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    trigger: Mapped[str] = mapped_column(String(32), default="file-added")
    match: Mapped[dict[str, Any]] = mapped_column(default=dict)
    gear_name: Mapped[str] = mapped_column(String(100))
    gear_version: Mapped[str | None] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (UniqueConstraint("project_id", "name"),)


class RuleTrigger(Base):
    """A queued rule match: ``file_id`` (one file version) matched ``rule_id``.

    Written in the same transaction as the file change that caused it (a transactional
    outbox), consumed by the dispatcher, which turns it into a job.  Unique per rule and file
    version, so a rule fires at most once per version however often the file changes.
    """

    __tablename__ = "rule_triggers"

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"))
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))
    created: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("rule_id", "file_id"),)


class Job(_Timestamps, Base):
    """One gear run (one attempt); retries are new jobs linked by ``previous_job_id``."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    gear_id: Mapped[int] = mapped_column(ForeignKey("gears.id"))
    state: Mapped[str] = mapped_column(String(16), default=JobState.PENDING.value)
    priority: Mapped[int] = mapped_column(Integer, default=2)
    created_by: Mapped[str] = mapped_column(String(255))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    destination_id: Mapped[int | None] = mapped_column(
        ForeignKey("containers.id", ondelete="SET NULL")
    )
    backend: Mapped[str] = mapped_column(String(32), default="local")
    runtime: Mapped[str | None] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(255))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(32))
    reason_detail: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    previous_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"))
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("rules.id", ondelete="SET NULL"))
    trigger_file_id: Mapped[int | None] = mapped_column(Integer)
    cache_key: Mapped[str | None] = mapped_column(String(64))
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    cancel_requested_by: Mapped[str | None] = mapped_column(String(255))
    runtime_version: Mapped[str | None] = mapped_column(String(255))
    image_digest: Mapped[str | None] = mapped_column(String(255))
    log_sha256: Mapped[str | None] = mapped_column(String(64))
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    not_before: Mapped[datetime | None] = mapped_column()
    started: Mapped[datetime | None] = mapped_column()
    finished: Mapped[datetime | None] = mapped_column()

    gear: Mapped[Gear] = relationship()
    events: Mapped[list[JobEvent]] = relationship(
        back_populates="job", order_by="JobEvent.id", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_jobs_state_priority", "state", "priority"),
        Index("ix_jobs_cache_key", "cache_key"),
        Index("ix_jobs_batch_id", "batch_id"),
        Index("ix_jobs_log_sha256", "log_sha256"),
        UniqueConstraint("rule_id", "trigger_file_id"),
    )


class JobEvent(Base):
    """Append-only history of a job's state transitions."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    time: Mapped[datetime] = mapped_column(default=utcnow)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)

    job: Mapped[Job] = relationship(back_populates="events")
