"""Google Cloud Storage as an ingest source (the ``gcs`` extra: google-cloud-storage)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from catalog.errors import ConfigError
from ingest.sources.base import BucketSource, SourceError, SourceObject

#: Objects per listing request (the API's maximum is 1000).
PAGE_SIZE = 1000


@dataclass
class GCSSource(BucketSource):
    """Objects below ``gs://bucket/prefix``.

    Credentials come from Google's Application Default Credentials (``gcloud auth
    application-default login``, ``GOOGLE_APPLICATION_CREDENTIALS``, a VM's service
    account); with none, requests are anonymous (public buckets).  ``STORAGE_EMULATOR_HOST``
    or ``endpoint_url`` selects another server of the JSON API.  Listing is paginated and
    resumes server-side (``startOffset``); keys are also filtered here, because emulators
    ignore that parameter.
    """

    SCHEME = "gs"

    def make_client(self) -> Any:
        try:
            from google.auth.credentials import AnonymousCredentials
            from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError
            from google.cloud import storage
        except ImportError as exc:
            raise ConfigError(
                "gs:// sources need google-cloud-storage: pip install 'gearbroker[gcs]'"
            ) from exc
        options = {"api_endpoint": self.endpoint_url} if self.endpoint_url else None
        try:  # project=None: listing and reading need no project
            return storage.Client(project=None, client_options=options)
        except DefaultCredentialsError:  # none configured: anonymous (public buckets)
            return storage.Client(
                project=None,
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options=options,
            )
        except GoogleAuthError as exc:  # e.g. an unreadable GOOGLE_APPLICATION_CREDENTIALS
            raise ConfigError(f"cannot use {self.url}: {exc}") from exc

    def iter_objects(self, start_after: str | None = None) -> Iterator[SourceObject]:
        kwargs: dict[str, Any] = {"prefix": self.prefix, "page_size": PAGE_SIZE}
        if start_after is not None:
            kwargs["start_offset"] = self.prefix + start_after  # inclusive: filtered below
        try:
            for blob in self.client.list_blobs(self.bucket, **kwargs):
                key = self.listed_key(blob.name, start_after)
                if key is not None:
                    yield SourceObject(key, int(blob.size), str(blob.generation or blob.etag))
        except _errors() as exc:
            raise SourceError(f"cannot list {self.url}: {exc}") from exc

    def get(self, key: str, span: tuple[int, int] | None) -> bytes:
        kwargs = {}
        if span is not None:
            start, length = span
            kwargs = {"start": start, "end": start + length - 1}  # end is inclusive
        try:
            blob = self.client.bucket(self.bucket).blob(self.prefix + key)
            data: bytes = blob.download_as_bytes(**kwargs)
        except _errors() as exc:
            raise SourceError(f"cannot read {self.object_url(key)}: {exc}") from exc
        return data


def _errors() -> tuple[type[Exception], ...]:
    """What the client raises for a failed request: API errors (missing bucket or object,
    denied access), credential errors and connection errors left after its retries."""
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError
    from requests import RequestException

    return (GoogleAPIError, GoogleAuthError, RequestException)
