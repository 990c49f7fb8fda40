"""S3 (and any S3-compatible server) as an ingest source."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from catalog.errors import ConfigError
from ingest.sources.base import BucketSource, SourceError, SourceObject


@dataclass
class S3Source(BucketSource):
    """Objects below ``s3://bucket/prefix``.

    Credentials, region and profile come from the standard AWS chain; ``endpoint_url``
    selects any S3-compatible server.  Listing is paginated (1000 keys per request) and
    resumes server-side (``StartAfter``).
    """

    SCHEME = "s3"

    def make_client(self) -> Any:
        import boto3
        from botocore.exceptions import BotoCoreError

        try:
            session = boto3.session.Session(profile_name=self.profile)
            return session.client("s3", endpoint_url=self.endpoint_url)
        except (BotoCoreError, ValueError) as exc:  # e.g. an unknown profile, a bad endpoint
            raise ConfigError(f"cannot use {self.url}: {exc}") from exc

    def iter_objects(self, start_after: str | None = None) -> Iterator[SourceObject]:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
        if start_after is not None:
            kwargs["StartAfter"] = self.prefix + start_after
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                for item in page.get("Contents", []):
                    key = self.listed_key(item["Key"], start_after)
                    if key is not None:
                        yield SourceObject(key, int(item["Size"]), item["ETag"].strip('"'))
        except (BotoCoreError, ClientError) as exc:
            raise SourceError(f"cannot list {self.url}: {exc}") from exc

    def get(self, key: str, span: tuple[int, int] | None) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs = {"Bucket": self.bucket, "Key": self.prefix + key}
        if span is not None:
            start, length = span
            kwargs["Range"] = f"bytes={start}-{start + length - 1}"
        try:
            body: bytes = self.client.get_object(**kwargs)["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise SourceError(f"cannot read {self.object_url(key)}: {exc}") from exc
        return body
