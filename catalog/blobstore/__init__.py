"""The catalog's content-addressed blob store: a local directory or an S3 bucket.

Use :func:`open_blobstore` with a URL; code against :class:`BlobStore`.
"""

from __future__ import annotations

from catalog.blobstore.base import BlobInfo, BlobStore, GcReport
from catalog.blobstore.errors import BlobIntegrityError, BlobNotFoundError
from catalog.blobstore.factory import open_blobstore
from catalog.blobstore.local import LocalBlobStore
from catalog.blobstore.s3 import S3BlobStore

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
