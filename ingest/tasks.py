"""The work Dask workers do: scan headers, store files, pack series; compact records back.

Every task takes a :class:`WorkSpec` (small and picklable: the source's address, the blob
store's URL, the mapping and de-id profile) and a shard, and returns one plain dict per
object (or per series).  A failure of one file is that file's ``error`` record, never the
task's: the ingest carries on.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset

from catalog.blobstore import BlobStore, open_blobstore
from catalog.blobstore.base import BlobBatch, BlobInfo
from catalog.errors import GearbrokerError
from ingest.deid import Profile, check_blob, deidentify
from ingest.dicom import (
    HEAD_BYTES,
    DicomFileError,
    MappingOptions,
    Target,
    header_fields,
    map_header,
    read_fields,
    read_header,
)
from ingest.sources import Source, SourceError

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_STORES: dict[tuple[str, tuple[tuple[str, Any], ...]], BlobStore] = {}

Record = dict[str, Any]


@dataclass(frozen=True)
class WorkSpec:
    """What every task needs; ``profile`` None means no de-identification."""

    source: Source
    store_url: str
    store_options: dict[str, Any] = field(default_factory=dict)
    mapping: MappingOptions = field(default_factory=MappingOptions)
    profile: Profile | None = None

    def store(self) -> BlobStore:
        """The blob store, opened once per worker process."""
        key = (self.store_url, tuple(sorted(self.store_options.items())))
        if key not in _STORES:
            _STORES[key] = open_blobstore(self.store_url, **self.store_options)
        return _STORES[key]


def scan_shard(spec: WorkSpec, objects: Sequence[Sequence[Any]]) -> list[Record]:
    """A dry run's scan: read each header (a ranged read of the head, the whole object only
    when the header is longer), de-identify it, map it; nothing is stored."""
    out = []
    for key, size, etag, *_rest in objects:
        record: Record = {"key": key, "size": size, "etag": etag}
        try:
            fields, log = _head_fields(spec, key, size)
            target = map_header(fields, spec.mapping, key)
        except GearbrokerError as exc:
            out.append({**record, "status": "error", "detail": {"error": str(exc)}})
            continue
        out.append(_mapped(record, "scanned", target, log))
    return out


def _head_fields(spec: WorkSpec, key: str, size: int) -> tuple[dict[str, Any], list[str]]:
    """The header fields of one object (de-identified first under a profile) and the de-id
    log, from a ranged read of its head (the whole object when the header is longer)."""
    data = spec.source.read_range(key, 0, HEAD_BYTES)
    if spec.profile is None:
        fields, offset = read_fields(data, size)
        if offset is None and len(data) < size:
            fields, offset = read_fields(spec.source.read(key), size)
        return fields, []
    ds, offset = read_header(data, size)
    if offset is None and len(data) < size:
        ds, offset = read_header(spec.source.read(key), size)
    log = deidentify(ds, spec.profile)
    return header_fields(ds), log


def scan_pack_shard(spec: WorkSpec, objects: Sequence[Sequence[Any]]) -> list[Record]:
    """Phase 1 of a packed DICOM ingest, in one read of each object: check, de-identify and
    map it, then pack the shard's files of each series into one zip *fragment* (put in the
    store with the shard's other fragments in one batch).

    Each "scanned" record names its fragment in ``sha256``; a member whose name repeats
    within the fragment (the same SOP instance twice) is recorded as a duplicate instead.  A
    series whose files all landed in one fragment needs nothing more: the fragment is its
    ``.dicom.zip`` (phase 2 packs only series split across shards).
    """
    out: list[Record] = []
    series: dict[str, list[tuple[Record, bytes]]] = {}
    for (key, size, etag, *_rest), (_key, read) in zip(
        objects, spec.source.read_ahead(objects), strict=True
    ):
        record: Record = {"key": key, "size": size, "etag": etag}
        try:
            data, target, log = _mapped_bytes(spec, key, size, read, mapping_only=True)
        except GearbrokerError as exc:
            out.append({**record, "status": "error", "detail": {"error": str(exc)}})
            continue
        mapped = _mapped(record, "scanned", target, log)
        out.append(mapped)
        series.setdefault(target.group_key, []).append((mapped, data))
    with spec.store().batch() as batch:
        for members in series.values():
            _pack_fragment(batch, members, spec.profile is None)
    return out


def _as_listed(read: bytes | SourceError, size: int) -> bytes:
    """The bytes read, if they are as many as the listing said (a file still being copied
    in is refused: a later run with ``--skip-existing`` takes it whole)."""
    if isinstance(read, SourceError):
        raise read
    if len(read) != size:
        raise SourceError(f"size changed since listing ({size} -> {len(read)} bytes)")
    return read


def _mapped_bytes(
    spec: WorkSpec, key: str, size: int, read: bytes | SourceError, mapping_only: bool = False
) -> tuple[bytes, Target, list[str]]:
    """One whole object as read (or the error reading it), checked, de-identified and
    mapped: (its bytes, target, de-id log).  ``mapping_only``: the target's header may hold
    only the :data:`~ingest.dicom.MAPPING_FIELDS` (unless the file is de-identified)."""
    data = _as_listed(read, size)
    fields, _offset = read_fields(data, len(data), mapping_only)
    log: list[str] = []
    if spec.profile:
        data, log, ds = _deidentified(data, spec.profile)
        fields = header_fields(ds)
    return data, map_header(fields, spec.mapping, key), log


def _member_order(position: int | None, name: str, key: str) -> tuple[int, str, str]:
    """Where a file goes in its series' zip: by instance number, then name, then key."""
    return (-1 if position is None else position, name, key)


def _pack_fragment(batch: BlobBatch, members: list[tuple[Record, bytes]], reread: bool) -> None:
    """One zip of ``members`` in archive order, put in ``batch``; sets each packed record's
    ``sha256`` to the zip's and turns repeated names into duplicates.  Only the first
    member keeps its header in ``detail``: a series' zip takes the header of its first
    member, which is the first of some fragment (the pack phase reads it from there).
    ``reread``: the records hold only the mapping fields, so the first member's whole
    header is read again from its bytes."""
    members.sort(key=lambda m: _member_order(m[0]["position"], m[0]["name"], m[0]["key"]))
    seen: dict[str, str] = {}
    packed = []
    first, first_data = members[0]
    if reread:
        first["detail"]["header"] = read_fields(first_data, len(first_data))[0]
    for record, _data in members[1:]:
        record["detail"].pop("header", None)
    for record, data in members:
        name = record["name"]
        if name in seen:
            record["status"] = "duplicate"
            record["detail"] = {"error": f"same instance as {seen[name]}"}
        else:
            seen[name] = record["key"]
            packed.append((record, data))

    def write(out: BinaryIO) -> None:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            for record, data in packed:
                archive.writestr(zipfile.ZipInfo(record["name"], _ZIP_TIME), data)

    blob = batch.put_built(write)
    for record, _data in packed:
        record["sha256"] = blob.sha256


def _mapped(record: Record, status: str, target: Target, log: list[str], **extra: Any) -> Record:
    """``record`` with its status and where its header maps it (plus ``extra``)."""
    detail = dict(target.detail)
    if log:
        detail["deid"] = log
    return {
        **record,
        "status": status,
        "group_key": target.group_key,
        "position": target.position,
        "subject": target.subject,
        "session": target.session,
        "acquisition": target.acquisition,
        "name": target.name,
        **extra,
        "detail": detail,
    }


def store_dicom(spec: WorkSpec, objects: Sequence[Sequence[Any]]) -> list[Record]:
    """Single-phase DICOM ingest (no packing): read each file once, check and map its
    header, de-identify, store the blob (the shard's blobs are synced together)."""
    reads = spec.source.read_ahead(objects)
    with spec.store().batch() as batch:
        return [
            _store_one_dicom(spec, batch, key, size, etag, read)
            for (key, size, etag, *_), (_key, read) in zip(objects, reads, strict=True)
        ]


def _store_one_dicom(
    spec: WorkSpec, batch: BlobBatch, key: str, size: int, etag: str, read: bytes | SourceError
) -> Record:
    record: Record = {"key": key, "size": size, "etag": etag}
    try:
        data, target, log = _mapped_bytes(spec, key, size, read)
        blob = batch.put_bytes(data)
    except GearbrokerError as exc:
        return {**record, "status": "error", "detail": {"error": str(exc)}}
    return _mapped(record, "stored", target, log, sha256=blob.sha256, stored_size=blob.size)


def store_folder(spec: WorkSpec, objects: Sequence[Sequence[Any]]) -> list[Record]:
    """Folder ingest: store each file as it is (DICOM files de-identified when a profile is
    given); placement was decided from the path by the driver."""
    out = []
    reads = spec.source.read_ahead(objects)
    with spec.store().batch() as batch:
        for (key, size, etag, subject, session, acquisition, name), (_key, read) in zip(
            objects, reads, strict=True
        ):
            record: Record = {
                "key": key,
                "size": size,
                "etag": etag,
                "subject": subject,
                "session": session,
                "acquisition": acquisition,
                "name": name,
            }
            try:
                data = _as_listed(read, size)
                log: list[str] = []
                if spec.profile and data[128:132] == b"DICM":
                    data, log, _ds = _deidentified(data, spec.profile)
                blob = batch.put_bytes(data)
            except GearbrokerError as exc:
                out.append({**record, "status": "error", "detail": {"error": str(exc)}})
                continue
            detail: dict[str, Any] = {"deid": log} if log else {}
            out.append(
                {
                    **record,
                    "status": "stored",
                    "sha256": blob.sha256,
                    "stored_size": blob.size,
                    "detail": detail,
                }
            )
    return out


def pack_groups(spec: WorkSpec, groups: Sequence[Record]) -> list[Record]:
    """Phase 2 of a packed DICOM ingest: one ``.dicom.zip`` per series.

    Each group is ``{"group_key", "members": [[item_id, key, size, member_name], ...]}`` in
    archive order.  A member whose name repeats (the same SOP instance twice) is left out as
    a duplicate; a member that fails to read is left out as an error.  Returns one record
    per group: the zip's digest and size and the per-member ``outcomes`` that are not
    "stored" (``[item_id, status, reason]``).
    """
    out = []
    with spec.store().batch() as batch:
        for group in groups:
            out.append(_pack_group(spec, batch, group))
    return out


class _NothingPacked(Exception):
    """Raised by a series' zip writer when no member could go in: no blob is stored."""


def _pack_group(spec: WorkSpec, batch: BlobBatch, group: Record) -> Record:
    """One series' zip, written member by member into the store (see
    :meth:`BlobBatch.put_built`) as part of ``batch``."""
    outcomes: list[list[Any]] = []
    seen: dict[str, str] = {}

    def write(out: BinaryIO) -> None:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            for item_id, key, size, member in group["members"]:
                if member in seen:
                    outcomes.append([item_id, "duplicate", f"same instance as {seen[member]}"])
                    continue
                try:
                    data = _as_listed(spec.source.read(key), size)
                    if spec.profile:
                        data, _log, _ds = _deidentified(data, spec.profile)
                except GearbrokerError as exc:
                    outcomes.append([item_id, "error", str(exc)])
                    continue
                seen[member] = key
                archive.writestr(zipfile.ZipInfo(member, _ZIP_TIME), data)
        if not seen:
            raise _NothingPacked

    try:
        blob: BlobInfo | None = batch.put_built(write)
    except _NothingPacked:
        blob = None
    return {
        "group_key": group["group_key"],
        "sha256": blob.sha256 if blob else None,
        "stored_size": blob.size if blob else 0,
        "members": len(seen),
        "outcomes": outcomes,
    }


def _deidentified(data: bytes, profile: Profile) -> tuple[bytes, list[str], Dataset]:
    """The file rewritten by ``profile`` (encoding kept), the change log and the dataset."""
    try:
        ds = dcmread(io.BytesIO(data))
        log = deidentify(ds, profile)
        buffer = io.BytesIO()
        ds.save_as(buffer)
    except (ValueError, TypeError, OSError) as exc:
        raise DicomFileError(f"cannot de-identify: {exc}") from exc
    return buffer.getvalue(), log, ds


def verify_blobs(spec: WorkSpec, digests: Sequence[str]) -> list[list[Any]]:
    """``[sha256, problems]`` for every stored blob in which PHI named by the profile survives."""
    assert spec.profile is not None
    store = spec.store()
    bad = []
    for digest in digests:
        with store.open(digest) as fh:
            data = fh.read()
        problems = check_blob(data, spec.profile)
        if problems:
            bad.append([digest, problems[:20]])
    return bad
