"""Open a blob store from a URL: ``file:///abs/dir`` or a plain path, or ``s3://bucket/prefix``."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from catalog.blobstore.base import BlobStore
from catalog.blobstore.local import LocalBlobStore
from catalog.errors import ConfigError

S3_OPTIONS = frozenset(
    {"endpoint_url", "region", "profile", "multipart_chunksize", "refresh_after"}
)


def open_blobstore(url: str, **options: Any) -> BlobStore:
    """Return the store named by ``url``; raise ConfigError for a bad URL or option.

    A plain path (relative ones resolve against the working directory) or a
    ``file://`` URL gives a :class:`LocalBlobStore` and takes no options.  An
    ``s3://bucket[/prefix]`` URL gives an :class:`S3BlobStore`; options are
    ``endpoint_url``, ``region``, ``profile``, ``multipart_chunksize`` and
    ``refresh_after``; credentials come from the usual AWS chain (environment,
    config files, instance roles).
    """
    if "://" not in url:
        return _local(Path(url).expanduser(), options)
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(f"a file URL needs an absolute path (file:///dir): {url!r}")
        return _local(Path(unquote(parts.path)), options)
    if parts.scheme == "s3":
        unknown = set(options) - S3_OPTIONS
        if unknown:
            raise ConfigError(f"unknown S3 blob store options: {', '.join(sorted(unknown))}")
        from catalog.blobstore.s3 import S3BlobStore  # boto3 only where a store needs it

        prefix = unquote(parts.path).strip("/")
        return S3BlobStore(parts.netloc, prefix + "/" if prefix else "", **options)
    raise ConfigError(f"unsupported blob store URL scheme {parts.scheme!r} in {url!r}")


def _local(root: Path, options: dict[str, Any]) -> LocalBlobStore:
    if options:
        raise ConfigError(f"a local blob store takes no options, got: {', '.join(sorted(options))}")
    return LocalBlobStore(root.resolve())
