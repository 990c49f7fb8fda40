"""The options of one ingest, stored with its IngestRun so that ``resume`` needs nothing else."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from catalog.errors import InvalidInputError
from ingest.deid import Profile, parse_profile
from ingest.dicom import MappingOptions
from ingest.sources import KeyFilter, Source, open_source
from ingest.templates import FolderTemplate, compile_template

DEFAULT_SHARD_FILES = 200
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class IngestOptions:
    """Everything that defines an ingest (JSON-serialisable)."""

    kind: str  # "dicom" or "folder"
    source: str
    group: str
    project: str
    template: str | None = None
    subject: str | None = None
    session: str | None = None
    subject_map: dict[str, str] = field(default_factory=dict)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    skip_existing: bool = False
    detect_duplicates: bool = False
    deid_profile: dict[str, Any] | None = None
    deid_name: str | None = None
    pack: bool = True
    strict_uid: bool = False
    verify: bool = False
    dry_run: bool = False
    shard_files: int = DEFAULT_SHARD_FILES
    shard_bytes: int = DEFAULT_SHARD_BYTES
    batch_files: int = 2000
    endpoint_url: str | None = None
    aws_profile: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("dicom", "folder"):
            raise InvalidInputError(f"unknown ingest kind {self.kind!r}")
        if self.kind == "folder" and not self.template:
            raise InvalidInputError("a folder ingest needs --template")
        if self.shard_files < 1 or self.shard_bytes < 1 or self.batch_files < 1:
            raise InvalidInputError("shard sizes must be positive")
        if self.verify and self.deid_profile is None:
            raise InvalidInputError("--verify checks a de-identification: give --de-identify")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["include"], data["exclude"] = list(self.include), list(self.exclude)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IngestOptions:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["include"] = tuple(values.get("include", ()))
        values["exclude"] = tuple(values.get("exclude", ()))
        return cls(**values)

    def open_source(self) -> Source:
        return open_source(self.source, endpoint_url=self.endpoint_url, profile=self.aws_profile)

    def key_filter(self) -> KeyFilter:
        return KeyFilter(self.include, self.exclude)

    def mapping(self) -> MappingOptions:
        return MappingOptions(self.subject, self.session, dict(self.subject_map), self.strict_uid)

    def profile(self) -> Profile | None:
        if self.deid_profile is None:
            return None
        return parse_profile(self.deid_profile, self.deid_name or "profile")

    def folder_template(self) -> FolderTemplate:
        assert self.template is not None
        return compile_template(self.template)

    @property
    def packed(self) -> bool:
        """Whether DICOM series are packed into one zip each (two phases)."""
        return self.kind == "dicom" and self.pack
