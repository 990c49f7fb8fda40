"""The declarative base, column types, enums and helpers every model module shares."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    MetaData,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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
