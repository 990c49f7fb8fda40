"""Where ingested files come from: a local folder or an object-store bucket (S3 and
S3-compatible servers, Google Cloud Storage, Azure Blob Storage), behind one small
interface (:class:`Source`, in :mod:`ingest.sources.base`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from catalog.errors import ConfigError
from ingest.sources.azure import AzureBlobSource
from ingest.sources.base import (
    BucketSource,
    KeyFilter,
    Source,
    SourceError,
    SourceObject,
    filtered,
    globs,
)
from ingest.sources.gcs import GCSSource
from ingest.sources.local import LocalFolderSource
from ingest.sources.s3 import S3Source

__all__ = [
    "AzureBlobSource",
    "BucketSource",
    "GCSSource",
    "KeyFilter",
    "LocalFolderSource",
    "S3Source",
    "Source",
    "SourceError",
    "SourceObject",
    "filtered",
    "globs",
    "open_source",
]

#: URL scheme -> bucket source class.  Their client libraries are imported only when used.
BUCKET_SOURCES: dict[str, type[BucketSource]] = {
    cls.SCHEME: cls for cls in (S3Source, GCSSource, AzureBlobSource)
}


def open_source(url: str, *, endpoint_url: str | None = None, profile: str | None = None) -> Source:
    """The source named by ``url``: a folder path (or ``file://``), ``s3://bucket/prefix``,
    ``gs://bucket/prefix`` or ``az://container/prefix``.  ``endpoint_url`` selects another
    server of the bucket's API; ``profile`` is an AWS profile (``s3://`` only)."""
    if "://" not in url:
        return LocalFolderSource(Path(url).expanduser())
    parts = urlsplit(url)
    if parts.scheme == "file":
        return LocalFolderSource(Path(unquote(parts.path)))
    cls = BUCKET_SOURCES.get(parts.scheme)
    if cls is None:
        raise ConfigError(f"unsupported source URL scheme {parts.scheme!r} in {url!r}")
    if not parts.netloc:
        raise ConfigError(f"no bucket in {url!r}")
    if profile and cls is not S3Source:
        raise ConfigError(f"an AWS profile applies to s3:// sources only, not {url!r}")
    return cls(parts.netloc, unquote(parts.path), endpoint_url, profile)
