"""Azure Blob Storage as an ingest source (the ``azure`` extra: azure-storage-blob)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from catalog.errors import ConfigError
from ingest.sources.base import BucketSource, SourceError, SourceObject

#: Blobs per listing request (the API's maximum is 5000).
PAGE_SIZE = 1000


@dataclass
class AzureBlobSource(BucketSource):
    """Blobs below ``az://container/prefix`` (the bucket is the container).

    The account and its credential come from the variables the Azure CLI and SDKs use:
    ``AZURE_STORAGE_CONNECTION_STRING``, or the account URL (``endpoint_url``, else
    ``https://$AZURE_STORAGE_ACCOUNT.blob.core.windows.net``) with ``AZURE_STORAGE_KEY``,
    ``AZURE_STORAGE_SAS_TOKEN``, azure-identity's default chain when it is installed, or no
    credential (a public container).  The Blob API has no "start after" for listings, so a
    resumed listing pages from the start of the prefix and skips keys already done.
    """

    SCHEME = "az"

    def make_client(self) -> Any:
        try:
            from azure.storage.blob import ContainerClient
        except ImportError as exc:
            raise ConfigError(
                "az:// sources need azure-storage-blob: pip install 'gearbroker[azure]'"
            ) from exc
        connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if connection and not self.endpoint_url:
            try:
                return ContainerClient.from_connection_string(connection, self.bucket)
            except ValueError as exc:
                raise ConfigError(f"AZURE_STORAGE_CONNECTION_STRING: {exc}") from exc
        account = os.environ.get("AZURE_STORAGE_ACCOUNT") or os.environ.get(
            "AZURE_STORAGE_ACCOUNT_NAME"
        )
        url = self.endpoint_url or (account and f"https://{account}.blob.core.windows.net")
        if not url:
            raise ConfigError(
                f"{self.url}: no Azure storage account: set AZURE_STORAGE_CONNECTION_STRING or "
                "AZURE_STORAGE_ACCOUNT, or pass the account URL as the endpoint URL"
            )
        try:
            return ContainerClient(url, self.bucket, credential=_credential(account, url))
        except ValueError as exc:  # e.g. a malformed account URL
            raise ConfigError(f"cannot use {self.url} at {url}: {exc}") from exc

    def iter_objects(self, start_after: str | None = None) -> Iterator[SourceObject]:
        from azure.core.exceptions import AzureError

        try:
            pages = self.client.list_blobs(
                name_starts_with=self.prefix or None, results_per_page=PAGE_SIZE
            )
            for blob in pages:
                key = self.listed_key(blob.name, start_after)
                if key is not None:
                    yield SourceObject(key, int(blob.size), str(blob.etag).strip('"'))
        except AzureError as exc:
            raise SourceError(f"cannot list {self.url}: {exc.message}") from exc

    def get(self, key: str, span: tuple[int, int] | None) -> bytes:
        from azure.core.exceptions import AzureError

        kwargs = {} if span is None else {"offset": span[0], "length": span[1]}
        try:
            data: bytes = self.client.download_blob(self.prefix + key, **kwargs).readall()
        except AzureError as exc:
            raise SourceError(f"cannot read {self.object_url(key)}: {exc.message}") from exc
        return data


def _credential(account: str | None, url: str) -> Any:
    """The first credential the environment offers for the account at ``url``."""
    key = os.environ.get("AZURE_STORAGE_KEY")
    if key:
        name = account or url.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
        return {"account_name": name, "account_key": key}
    sas = os.environ.get("AZURE_STORAGE_SAS_TOKEN")
    if sas:
        return sas
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        return None
    return DefaultAzureCredential()
