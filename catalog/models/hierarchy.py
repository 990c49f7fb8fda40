"""The data hierarchy: containers of every level (one table) and file versions.

All hierarchy levels (group, project, subject, session, acquisition, analysis) share one
``containers`` table through single-table inheritance: every level has the same columns
(label, info, tags, timestamps), so search joins and tree walks are uniform.  Each row also
carries the ids of its ancestors (``group_id`` ... ``acquisition_id``) so that a query on any
level joins any other level in one step.  Files carry the same ancestor ids.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from catalog.models.base import ANCESTOR_COLUMNS, Base, JSONType, Level, _Timestamps


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
