"""De-identification profiles in Flywheel's YAML vocabulary, applied before anything is stored.

A profile::

    name: study-x
    dicom:
      salt: "a secret"              # mixed into hash and hashuid
      date-increment: -17           # days added by increment-date
      remove-private-tags: true
      recurse-sequence: true        # apply field actions inside sequences too
      fields:
        - {name: PatientName, replace-with: ANONYMOUS}
        - {name: PatientBirthDate, remove: true}
        - {name: StudyDate, increment-date: true}
        - {name: AccessionNumber, hash: true}
        - {name: StudyInstanceUID, hashuid: true}
        - {name: PatientSex, keep: true}

Field names are keywords or tags (``(0010,0010)``, ``0x00100010``, ``00100010``).  Every
transformation is deterministic (same input, profile and salt -> same output), so a file's
header scanned in one pass and rewritten in another maps to the same place.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from catalog.errors import InvalidInputError

ACTIONS = ("remove", "replace-with", "increment-date", "hash", "hashuid", "keep")
_PROFILE_KEYS = frozenset({"name", "description", "dicom", "salt"})
_DICOM_KEYS = frozenset(
    {"fields", "salt", "date-increment", "remove-private-tags", "recurse-sequence"}
)
_TAG_RE = re.compile(r"^\(?(?:0x)?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")
_SOP_INSTANCE = 0x00080018
_MEDIA_SOP_INSTANCE = 0x00020003
_HASH_RE = re.compile(r"^[0-9a-f]{16}$")


class DeidProfileError(InvalidInputError):
    """A de-identification profile is malformed."""


@dataclass(frozen=True)
class FieldRule:
    """One field action: ``action`` is one of :data:`ACTIONS`."""

    tag: BaseTag
    name: str
    action: str
    value: str | None = None


@dataclass(frozen=True)
class Profile:
    """A parsed profile; ``sha256`` identifies it (recorded on every stored file)."""

    name: str
    rules: tuple[FieldRule, ...]
    salt: str
    date_increment: int
    remove_private: bool
    recurse: bool
    sha256: str

    def record(self) -> dict[str, str]:
        """What is written to each file's ``info.deid``."""
        return {"profile": self.name, "sha256": self.sha256}


def load_profile(path: Path) -> Profile:
    """Read and validate a YAML profile; raises DeidProfileError."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DeidProfileError(f"cannot read de-id profile {path}: {exc}") from exc
    return parse_profile(data, default_name=path.stem)


def parse_profile(data: Any, default_name: str = "profile") -> Profile:
    """Validate a profile given as loaded YAML."""
    if not isinstance(data, dict) or not isinstance(data.get("dicom"), dict):
        raise DeidProfileError("a de-id profile is a mapping with a 'dicom' section")
    _unknown(data, _PROFILE_KEYS, "profile")
    section = data["dicom"]
    _unknown(section, _DICOM_KEYS, "dicom")
    fields = section.get("fields") or []
    if not isinstance(fields, list):
        raise DeidProfileError("dicom.fields must be a list")
    rules = tuple(_rule(item) for item in fields)
    increment = section.get("date-increment", 0)
    if isinstance(increment, bool) or not isinstance(increment, int):
        raise DeidProfileError("dicom.date-increment must be an integer number of days")
    canonical = json.dumps(data, sort_keys=True, default=str).encode()
    return Profile(
        name=str(data.get("name") or default_name),
        rules=rules,
        salt=str(section.get("salt", data.get("salt", ""))),
        date_increment=increment,
        remove_private=bool(section.get("remove-private-tags", False)),
        recurse=bool(section.get("recurse-sequence", False)),
        sha256=hashlib.sha256(canonical).hexdigest(),
    )


def _unknown(mapping: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = set(mapping) - allowed
    if extra:
        raise DeidProfileError(f"unknown key(s) in {where}: {', '.join(sorted(extra))}")


def _rule(item: Any) -> FieldRule:
    if not isinstance(item, dict) or "name" not in item:
        raise DeidProfileError(f"a field rule needs a name: {item!r}")
    name = str(item["name"])
    actions = [a for a in ACTIONS if a in item]
    extra = set(item) - {"name", *ACTIONS}
    if len(actions) != 1 or extra:
        raise DeidProfileError(f"field {name}: give exactly one of {', '.join(ACTIONS)}")
    action = actions[0]
    value = item[action]
    if action != "replace-with" and value is not True:
        raise DeidProfileError(f"field {name}: {action} takes true")
    return FieldRule(_tag(name), name, action, str(value) if action == "replace-with" else None)


def _tag(name: str) -> BaseTag:
    match = _TAG_RE.match(name.strip())
    if match:
        return Tag(int(match.group(1) + match.group(2), 16))
    number = tag_for_keyword(name)
    if number is None:
        raise DeidProfileError(f"unknown DICOM keyword {name!r}")
    return Tag(number)


def deidentify(ds: Dataset, profile: Profile) -> list[str]:
    """Apply ``profile`` to ``ds`` in place; returns the change log (``Keyword: action``)."""
    log: list[str] = []
    _apply(ds, profile, log, top=True)
    if profile.remove_private:
        private = sum(1 for elem in ds.iterall() if elem.tag.is_private)
        if private:
            ds.remove_private_tags()
            log.append(f"private tags: removed {private}")
    if ds.get(_SOP_INSTANCE) is not None and getattr(ds, "file_meta", None) is not None:
        new = str(ds[_SOP_INSTANCE].value)
        if _MEDIA_SOP_INSTANCE in ds.file_meta and ds.file_meta[_MEDIA_SOP_INSTANCE].value != new:
            ds.file_meta[_MEDIA_SOP_INSTANCE].value = new
    return log


def _apply(ds: Dataset, profile: Profile, log: list[str], top: bool) -> None:
    for rule in profile.rules:
        if rule.tag not in ds:
            continue
        elem = ds[rule.tag]
        label = rule.name if top else f"{rule.name} (in sequence)"
        if rule.action == "keep":
            continue
        if rule.action == "remove":
            del ds[rule.tag]
        elif rule.action == "replace-with":
            elem.value = rule.value
        elif rule.action == "hash":
            elem.value = hash_value(str(elem.value), profile.salt)
        elif rule.action == "hashuid":
            elem.value = hash_uid(str(elem.value), profile.salt)
        elif rule.action == "increment-date":
            shifted = shift_date(str(elem.value), profile.date_increment)
            if shifted is None:
                del ds[rule.tag]
            else:
                elem.value = shifted
        log.append(f"{label}: {rule.action}")
    if profile.recurse:
        for elem in list(ds):
            if elem.VR == "SQ":
                for item in elem.value:
                    _apply(item, profile, log, top=False)


def hash_value(value: str, salt: str) -> str:
    """The ``hash`` action: 16 hex digits of sha256(salt + value)."""
    return hashlib.sha256((salt + value).encode()).hexdigest()[:16]


def hash_uid(uid: str, salt: str) -> str:
    """The ``hashuid`` action: a valid ``2.25.<decimal>`` UID derived from salt + uid."""
    digest = hashlib.sha256((salt + uid).encode()).hexdigest()[:32]
    return f"2.25.{int(digest, 16)}"


def shift_date(value: str, days: int) -> str | None:
    """A DA (or the date part of a DT) shifted by ``days``; None if it is not a date."""
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        day = date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None
    return (day + timedelta(days=days)).strftime("%Y%m%d") + text[8:]


def check_dataset(ds: Dataset, profile: Profile) -> list[str]:
    """PHI the profile should have removed but that is present in ``ds`` (empty: clean)."""
    problems: list[str] = []
    for rule in profile.rules:
        for elem in _occurrences(ds, rule.tag, profile.recurse):
            value = "" if elem.value is None else str(elem.value)
            if rule.action == "remove":
                problems.append(f"{rule.name} present")
            elif rule.action == "replace-with" and value != rule.value:
                problems.append(f"{rule.name} not replaced")
            elif rule.action == "hash" and not _HASH_RE.match(value):
                problems.append(f"{rule.name} not hashed")
            elif rule.action == "hashuid" and not value.startswith("2.25."):
                problems.append(f"{rule.name} not a hashed UID")
    if profile.remove_private and any(elem.tag.is_private for elem in ds.iterall()):
        problems.append("private tags present")
    return problems


def _occurrences(ds: Dataset, tag: BaseTag, recurse: bool) -> Iterator[Any]:
    if tag in ds:
        yield ds[tag]
    if recurse:
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    yield from _occurrences(item, tag, recurse)


def check_blob(data: bytes, profile: Profile) -> list[str]:
    """:func:`check_dataset` over a stored file: one DICOM file or a zip of them."""
    if data[:4] == b"PK\x03\x04":
        problems: list[str] = []
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                ds = dcmread(io.BytesIO(archive.read(member)), force=True)
                problems += [f"{member}: {p}" for p in check_dataset(ds, profile)]
        return problems
    return check_dataset(dcmread(io.BytesIO(data), force=True), profile)
