"""SQLAlchemy 2.0 models of the catalog: the data hierarchy, gears, jobs, rules, users, audit.

All hierarchy levels (group, project, subject, session, acquisition, analysis) share one
``containers`` table through single-table inheritance: every level has the same columns
(label, info, tags, timestamps), so search joins and tree walks are uniform.  Each row also
carries the ids of its ancestors (``group_id`` ... ``acquisition_id``) so that a query on any
level joins any other level in one step.  Files carry the same ancestor ids.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSON on SQLite, JSONB (indexable with GIN / expression indexes) on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (all catalog timestamps are UTC)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """The one declarative base; constraint names follow ``NAMING_CONVENTION``."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dict[str, Any]: JSONType,
        list[str]: JSONType,
        list[Any]: JSONType,
        datetime: UTCDateTime(),
    }


class Level(enum.StrEnum):
    """The hierarchy levels, top to bottom; analyses hang off any container."""

    GROUP = "group"
    PROJECT = "project"
    SUBJECT = "subject"
    SESSION = "session"
    ACQUISITION = "acquisition"
    ANALYSIS = "analysis"


#: The fixed chain of levels (analysis excluded).
HIERARCHY: tuple[Level, ...] = (
    Level.GROUP,
    Level.PROJECT,
    Level.SUBJECT,
    Level.SESSION,
    Level.ACQUISITION,
)

#: Ancestor-id column name per level.
ANCESTOR_COLUMNS: dict[Level, str] = {lvl: f"{lvl.value}_id" for lvl in HIERARCHY}


class RoleName(enum.StrEnum):
    """Project (or group) roles, strongest first."""

    ADMIN = "admin"
    READ_WRITE = "rw"
    READ_ONLY = "ro"


class JobState(enum.StrEnum):
    """What the user sees of a job (Flywheel's five plus ``queued``)."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED)


class _Timestamps:
    created: Mapped[datetime] = mapped_column(default=utcnow)
    modified: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Container(_Timestamps, Base):
    """A node of the hierarchy; ``level`` selects the subclass."""

    __tablename__ = "containers"

    id: Mapped[int] = mapped_column(primary_key=True)
    level: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("containers.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(255))
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[str]] = mapped_column(default=list)
    group_id: Mapped[int | None] = mapped_column(Integer)
    project_id: Mapped[int | None] = mapped_column(Integer)
    subject_id: Mapped[int | None] = mapped_column(Integer)
    session_id: Mapped[int | None] = mapped_column(Integer)
    acquisition_id: Mapped[int | None] = mapped_column(Integer)
    # Analysis-only columns (NULL on other levels).
    job_id: Mapped[int | None] = mapped_column(Integer)  # soft link: jobs also point here
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    parent: Mapped[Container | None] = relationship(
        remote_side="Container.id", back_populates="children"
    )
    children: Mapped[list[Container]] = relationship(
        back_populates="parent", cascade="all, delete-orphan", passive_deletes=True
    )
    files: Mapped[list[File]] = relationship(
        back_populates="container", cascade="all, delete-orphan", passive_deletes=True
    )

    __mapper_args__ = {"polymorphic_on": "level", "polymorphic_identity": "container"}
    __table_args__ = (
        Index(
            "uq_containers_sibling_label",
            "parent_id",
            "label",
            unique=True,
            sqlite_where=text("parent_id IS NOT NULL AND level != 'analysis'"),
            postgresql_where=text("parent_id IS NOT NULL AND level != 'analysis'"),
        ),
        Index(
            "uq_containers_group_label",
            "label",
            unique=True,
            sqlite_where=text("level = 'group'"),
            postgresql_where=text("level = 'group'"),
        ),
        Index("ix_containers_parent_level", "parent_id", "level"),
        Index("ix_containers_level_label", "level", "label"),
        Index("ix_containers_project_level", "project_id", "level"),
    )

    @property
    def level_enum(self) -> Level:
        return Level(self.level)

    def ancestor_ids(self) -> dict[str, int | None]:
        """Ancestor ids a child of this container inherits (this container included)."""
        ids: dict[str, int | None] = {col: getattr(self, col) for col in ANCESTOR_COLUMNS.values()}
        if self.level != Level.ANALYSIS:
            ids[ANCESTOR_COLUMNS[Level(self.level)]] = self.id
        return ids


class Group(Container):
    __mapper_args__ = {"polymorphic_identity": Level.GROUP.value}


class Project(Container):
    __mapper_args__ = {"polymorphic_identity": Level.PROJECT.value}


class Subject(Container):
    __mapper_args__ = {"polymorphic_identity": Level.SUBJECT.value}


class Session(Container):
    __mapper_args__ = {"polymorphic_identity": Level.SESSION.value}


class Acquisition(Container):
    __mapper_args__ = {"polymorphic_identity": Level.ACQUISITION.value}


class Analysis(Container):
    """Results of a gear run (or a manual analysis), attachable to any container."""

    __mapper_args__ = {"polymorphic_identity": Level.ANALYSIS.value}


LEVEL_CLASSES: dict[Level, type[Container]] = {
    Level.GROUP: Group,
    Level.PROJECT: Project,
    Level.SUBJECT: Subject,
    Level.SESSION: Session,
    Level.ACQUISITION: Acquisition,
    Level.ANALYSIS: Analysis,
}


class File(_Timestamps, Base):
    """One version of a file; ``current`` marks the newest version of a name in a container."""

    __tablename__ = "files"

    id: Mapped[int] = mapped_column(primary_key=True)
    container_id: Mapped[int] = mapped_column(ForeignKey("containers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(1024))
    version: Mapped[int] = mapped_column(default=1)
    current: Mapped[bool] = mapped_column(Boolean, default=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    mimetype: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(64))
    classification: Mapped[dict[str, Any]] = mapped_column(default=dict)
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[str]] = mapped_column(default=list)
    origin_type: Mapped[str] = mapped_column(String(16), default="user")
    origin_id: Mapped[str | None] = mapped_column(String(255))
    group_id: Mapped[int | None] = mapped_column(Integer)
    project_id: Mapped[int | None] = mapped_column(Integer)
    subject_id: Mapped[int | None] = mapped_column(Integer)
    session_id: Mapped[int | None] = mapped_column(Integer)
    acquisition_id: Mapped[int | None] = mapped_column(Integer)

    container: Mapped[Container] = relationship(back_populates="files")

    __table_args__ = (
        UniqueConstraint("container_id", "name", "version"),
        Index(
            "uq_files_current_name",
            "container_id",
            "name",
            unique=True,
            sqlite_where=text("current"),
            postgresql_where=text("current"),
        ),
        # Content lookups are per project (ingest's duplicate detection): a global sha256
        # index takes random-key writes across the whole table and made bulk loads ~3x slower.
        Index("ix_files_project_sha256", "project_id", "sha256"),
        Index("ix_files_type", "type"),
        # (ancestor, type) pairs serve "file.type = X and project/session ..." directly, and
        # plain ancestor lookups through their prefix.
        Index("ix_files_project_type", "project_id", "type"),
        Index("ix_files_session_type", "session_id", "type"),
        Index("ix_files_acquisition_id", "acquisition_id"),
        Index("ix_files_name", "name"),
    )


class User(Base):
    """A person (or service account) acting on the catalog."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Role(Base):
    """A user's role on a group (inherited by its projects) or on a project."""

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(primary_key=True)
    container_id: Mapped[int] = mapped_column(ForeignKey("containers.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(8))

    user: Mapped[User] = relationship()

    __table_args__ = (UniqueConstraint("container_id", "user_id"),)


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


class AuditEvent(Base):
    """Append-only record of every catalog mutation and download."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    time: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    username: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[int | None] = mapped_column(Integer)
    path: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


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
