"""Errors raised by the blob store; every one is a :class:`catalog.errors.StoreError`."""

from __future__ import annotations

from catalog.errors import NotFoundError, StoreError


class BlobNotFoundError(NotFoundError, StoreError):
    """No blob with the given sha256 is in the store."""


class BlobIntegrityError(StoreError):
    """Stored or fetched bytes do not match the expected size or sha256."""
