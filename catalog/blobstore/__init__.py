"""The catalog's content-addressed blob store: a local directory or an S3 bucket.

Use :func:`open_blobstore` with a URL; code against :class:`BlobStore`.  ``S3BlobStore``
is imported on first use, so a process with a local store never loads boto3 (~0.1 s).
"""

from __future__ import annotations

from typing import Any

from catalog.blobstore.base import BlobInfo, BlobStore, GcReport
from catalog.blobstore.errors import BlobIntegrityError, BlobNotFoundError
from catalog.blobstore.factory import open_blobstore
from catalog.blobstore.local import LocalBlobStore

__all__ = [
    "BlobInfo",
    "BlobIntegrityError",
    "BlobNotFoundError",
    "BlobStore",
    "GcReport",
    "LocalBlobStore",
    "S3BlobStore",
    "open_blobstore",
]


def __getattr__(name: str) -> Any:
    if name == "S3BlobStore":
        from catalog.blobstore.s3 import S3BlobStore

        return S3BlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
