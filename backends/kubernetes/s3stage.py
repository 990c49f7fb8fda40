"""S3 staging on the broker's side: upload a job's mounts, presign, bring outputs back, clean up.

Objects of one Job live under ``<s3_prefix><Job name>/``: ``stage.tar`` (every mount source,
archived with its path relative to the job folder, streamed up before the Job is created)
and ``output.tar`` (POSTed by the pod's ``stage-out`` container).  The broker's credentials
come from boto3's standard chain (``s3_endpoint_url``, ``s3_region``); pods only get a
presigned GET URL for ``stage.tar`` and a presigned POST policy for exactly ``output.tar``
(at most 5 GiB, S3's limit for a POST), both signed for ``s3_pod_endpoint_url``.
"""

from __future__ import annotations

import logging
import os
import tarfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from backends.base import BackendState, TaskStatus
from backends.errors import BackendError
from backends.kubernetes.config import KubernetesSiteConfig
from backends.kubernetes.s3pod import PodUrls, relative_source
from backends.kubernetes.untar import OutputArchiveError, extract_outputs
from broker.task import TaskSpec

log = logging.getLogger(__name__)
STAGE_KEY = "stage.tar"
OUTPUT_KEY = "output.tar"
MAX_OUTPUT_BYTES = 5 * 1024**3
_S3_ERRORS = (ClientError, BotoCoreError, Boto3Error)
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
#: Status calls that may fail to fetch a finished Job's outputs before it is settled FAILED.
COLLECT_ATTEMPTS = 3


class S3StagingError(BackendError):
    """The staging bucket could not be read or written (worth retrying later)."""


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Archive entries owned by nobody in particular, readable by the pod's user."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    executable = info.isdir() or bool(info.mode & 0o100)
    info.mode = 0o755 if executable else 0o644
    return info


class S3Staging:
    """The staging bucket of one site (clients are built lazily from the standard chain)."""

    def __init__(
        self, site: KubernetesSiteConfig, client: Any = None, presigner: Any = None
    ) -> None:
        assert site.s3_bucket is not None
        self.site = site
        self.bucket = site.s3_bucket
        self._client = client
        self._presigner = presigner
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}

    def _make(self, endpoint: str | None) -> Any:
        config = Config(signature_version="s3v4", retries={"mode": "standard"})
        session = boto3.session.Session(region_name=self.site.s3_region)  # the standard chain
        return session.client("s3", endpoint_url=endpoint, config=config)

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make(self.site.s3_endpoint_url)
            return self._client

    @property
    def presigner(self) -> Any:
        """A client signing for the endpoint pods reach (signing needs no request)."""
        with self._lock:
            if self._presigner is None:
                self._presigner = self._make(self.site.pod_endpoint_url)
            return self._presigner

    def prefix(self, name: str) -> str:
        return f"{self.site.s3_prefix}{name}/"

    # -- submission ----------------------------------------------------------------------
    def upload(self, task: TaskSpec, name: str) -> None:
        """Stream every mount source of ``task`` as ``stage.tar`` (no temporary file)."""
        read_fd, write_fd = os.pipe()
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                with (
                    os.fdopen(write_fd, "wb") as sink,
                    tarfile.open(fileobj=sink, mode="w|", dereference=True) as tar,
                ):
                    for mount in task.container.mounts:
                        rel = relative_source(task, mount.source)
                        tar.add(mount.source, arcname=rel, filter=_normalise)
            except (OSError, tarfile.TarError, BackendError) as exc:
                failure.append(exc)

        producer = threading.Thread(target=produce, name=f"gb-s3-stage-{name}", daemon=True)
        producer.start()
        key = self.prefix(name) + STAGE_KEY
        try:
            with os.fdopen(read_fd, "rb") as source:
                self.client.upload_fileobj(source, self.bucket, key)
        except _S3_ERRORS as exc:
            raise S3StagingError(f"cannot upload s3://{self.bucket}/{key}: {exc}") from exc
        finally:
            producer.join()
        if failure:
            raise S3StagingError(f"cannot archive the mounts of {task.key}: {failure[0]}")

    def urls(self, name: str) -> PodUrls:
        """A presigned GET of ``stage.tar`` and a presigned POST policy for ``output.tar``."""
        ttl = self.site.presign_ttl_s
        key = self.prefix(name)
        try:
            stage = self.presigner.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key + STAGE_KEY}, ExpiresIn=ttl
            )
            post = self.presigner.generate_presigned_post(
                self.bucket,
                key + OUTPUT_KEY,
                Conditions=[["content-length-range", 0, MAX_OUTPUT_BYTES]],
                ExpiresIn=ttl,
            )
        except _S3_ERRORS as exc:
            raise S3StagingError(f"cannot presign s3://{self.bucket}/{key}: {exc}") from exc
        fields = tuple((str(k), str(v)) for k, v in post["fields"].items())
        return PodUrls(str(stage), str(post["url"]), fields)

    # -- collection ----------------------------------------------------------------------
    def fetch_outputs(self, name: str, job_dir: Path, output_rel: str) -> list[str] | None:
        """Unpack ``output.tar`` into ``job_dir``; the skipped names, or None when absent."""
        key = self.prefix(name) + OUTPUT_KEY
        archive = job_dir / f".gb-{uuid.uuid4().hex}.tar"
        try:
            self.client.download_file(self.bucket, key, str(archive))
        except ClientError as exc:
            archive.unlink(missing_ok=True)
            if str(exc.response.get("Error", {}).get("Code")) in _MISSING:
                return None
            raise S3StagingError(f"cannot download s3://{self.bucket}/{key}: {exc}") from exc
        except (BotoCoreError, Boto3Error, OSError) as exc:
            archive.unlink(missing_ok=True)
            raise S3StagingError(f"cannot download s3://{self.bucket}/{key}: {exc}") from exc
        try:
            return extract_outputs(archive, job_dir, output_rel)
        finally:
            archive.unlink(missing_ok=True)

    def finish(
        self,
        name: str,
        job_dir: str,
        output_rel: str,
        status: TaskStatus,
        stager_log: Callable[[], bytes],
    ) -> TaskStatus | None:
        """:meth:`outcome`, or None while the bucket fails (FAILED after COLLECT_ATTEMPTS)."""
        try:
            result = self.outcome(name, job_dir, output_rel, status, stager_log)
        except S3StagingError as exc:
            tries = self._failures[name] = self._failures.get(name, 0) + 1
            if tries < COLLECT_ATTEMPTS:
                return None
            result = replace(status, state=BackendState.FAILED, message=f"outputs lost: {exc}")
        self._failures.pop(name, None)
        return result

    def outcome(
        self,
        name: str,
        job_dir: str,
        output_rel: str,
        status: TaskStatus,
        stager_log: Callable[[], bytes],
    ) -> TaskStatus:
        """``status`` after bringing the outputs back (S3StagingError: try again later).

        A completed Job whose pod uploaded no outputs, or whose archive cannot be unpacked,
        becomes FAILED; the finishing container's log and skipped names go to the job log.
        """
        folder = Path(job_dir)
        problem = None
        try:
            skipped = self.fetch_outputs(name, folder, output_rel)
        except OutputArchiveError as exc:
            skipped, problem = [], str(exc)
        if skipped is None and status.state is not BackendState.COMPLETED:
            text = stager_log().decode(errors="replace")
            if text:
                self._note(
                    folder, ["[gearbroker: no outputs came back; the stager's log:]\n", text]
                )
            return status
        if skipped is None:
            problem = f"the pod uploaded no outputs to s3://{self.bucket}/{self.prefix(name)}"
        notes = [f"[gearbroker: output {n!r} was not unpacked (not a file or folder below "
                 f"{output_rel}, or unsafe)]\n" for n in skipped or ()]  # fmt: skip
        if problem is not None:
            notes.append(f"[gearbroker: {problem}]\n")
            notes.append(stager_log().decode(errors="replace"))
        self._note(folder, notes)
        if problem is None:
            return status
        if status.state is BackendState.COMPLETED:
            return replace(status, state=BackendState.FAILED, message=problem)
        message = f"{status.message}; {problem}" if status.message else problem
        return replace(status, message=message)

    @staticmethod
    def _note(job_dir: Path, notes: list[str]) -> None:
        """Append ``notes`` to the job's log."""
        if notes:
            with (job_dir / "logs" / "output.log").open("a") as fh:
                fh.write("".join(notes))

    def cleanup(self, name: str) -> None:
        """Delete the Job's staging objects; failures are logged (a lifecycle rule is the
        backstop)."""
        prefix = self.prefix(name)
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                    )
        except _S3_ERRORS as exc:
            log.warning("cannot delete s3://%s/%s: %s", self.bucket, prefix, exc)

    def probe(self) -> str:
        """Write, presign and delete a small object; S3StagingError says what failed."""
        key = f"{self.site.s3_prefix}.gb-doctor-{uuid.uuid4().hex}"
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"gearbroker doctor\n")
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except _S3_ERRORS as exc:
            raise S3StagingError(f"cannot write s3://{self.bucket}/{key}: {exc}") from exc
        self.urls("doctor")
        where = self.site.pod_endpoint_url or "AWS"
        return f"s3://{self.bucket}/{self.site.s3_prefix} is writable; pods reach {where}"
