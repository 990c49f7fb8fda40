"""SQLAlchemy 2.0 models of the catalog, one module per area; every name is importable
from here (``from catalog.models import Job``), which also registers every table on
``Base.metadata``."""

from __future__ import annotations

from catalog.models.base import (
    ANCESTOR_COLUMNS,
    HIERARCHY,
    NAMING_CONVENTION,
    Base,
    JobState,
    JSONType,
    Level,
    RoleName,
    UTCDateTime,
    utcnow,
)
from catalog.models.hierarchy import (
    LEVEL_CLASSES,
    Acquisition,
    Analysis,
    Container,
    File,
    Group,
    Project,
    Session,
    Subject,
)
from catalog.models.ingest import (
    IngestItem,
    IngestRun,
    IngestShard,
)
from catalog.models.jobs import (
    Batch,
    Gear,
    Job,
    JobEvent,
    Rule,
    RuleTrigger,
)
from catalog.models.people import (
    AuditEvent,
    Role,
    User,
)

__all__ = [
    "ANCESTOR_COLUMNS",
    "HIERARCHY",
    "LEVEL_CLASSES",
    "NAMING_CONVENTION",
    "Acquisition",
    "Analysis",
    "AuditEvent",
    "Base",
    "Batch",
    "Container",
    "File",
    "Gear",
    "Group",
    "IngestItem",
    "IngestRun",
    "IngestShard",
    "JSONType",
    "Job",
    "JobEvent",
    "JobState",
    "Level",
    "Project",
    "Role",
    "RoleName",
    "Rule",
    "RuleTrigger",
    "Session",
    "Subject",
    "UTCDateTime",
    "User",
    "utcnow",
]
