"""The ``custom.gearbroker`` manifest extension: resources, exit-code classes, runtime, digest.

Living under ``custom`` keeps a manifest valid for Flywheel.  Shape::

    "custom": {"gearbroker": {
        "resources": {"cpus": 2, "memory": "8G", "gpus": 0, "walltime": "02:00:00",
                      "disk": "20G"},
        "exit-codes": {"transient": [75], "permanent": [1], "bad-input": [2]},
        "retry": {"max-retries": 2, "backoff": "30s"},
        "runtime": "podman",
        "image-digest": "sha256:<64 hex>"}}

The JSON Schema checks the shape; :func:`extension_issues` checks what it cannot
(sizes and walltimes that parse to zero, a code listed in two classes).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gearspec.errors import Issue, child

_SIZE = re.compile(r"^(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[KMGTkmgt]i?[Bb]?|[Bb])?$")
_CLOCK = re.compile(r"^(?:(?P<d>[0-9]+)-)?(?P<h>[0-9]+):(?P<m>[0-9]{2}):(?P<s>[0-9]{2})$")
_SUFFIXED = re.compile(r"^(?P<n>[0-9]+)(?P<u>[smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EXIT_CLASSES = ("transient", "permanent", "bad-input")


class ExitClass(enum.Enum):
    """What a gear's exit code means for the retry policy."""

    SUCCESS = "success"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    BAD_INPUT = "bad-input"
    UNCLASSIFIED = "unclassified"


def parse_size(value: int | str) -> int:
    """Bytes in a size: an integer, or a string like ``512M``/``4GiB`` (powers of 1024).

    Raises ValueError on anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"negative size: {value}")
        return value
    match = _SIZE.match(value.strip())
    if not match:
        raise ValueError(f"not a size: {value!r}")
    unit = (match["unit"] or "B").upper()
    power = "BKMGT".index(unit[0])
    return int(float(match["num"]) * 1024**power)


def parse_walltime(value: int | str) -> int:
    """Seconds in a walltime: an integer, ``[D-]HH:MM:SS`` or ``<n>s|m|h|d``.

    Raises ValueError on anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a walltime: {value!r}")
    if isinstance(value, int):
        return value
    clock = _CLOCK.match(value)
    if clock:
        days = int(clock["d"] or 0)
        return days * 86400 + int(clock["h"]) * 3600 + int(clock["m"]) * 60 + int(clock["s"])
    suffixed = _SUFFIXED.match(value)
    if suffixed:
        return int(suffixed["n"]) * _UNIT_SECONDS[suffixed["u"]]
    raise ValueError(f"not a walltime: {value!r}")


@dataclass(frozen=True)
class Resources:
    """Resource requests of a gear; ``None`` means "use the backend's default"."""

    cpus: float | None = None
    memory_bytes: int | None = None
    gpus: int = 0
    walltime_seconds: int | None = None
    disk_bytes: int | None = None


@dataclass(frozen=True)
class ExitCodeClasses:
    """Which non-zero exit codes are transient, permanent or caused by bad input."""

    transient: frozenset[int] = field(default_factory=frozenset)
    permanent: frozenset[int] = field(default_factory=frozenset)
    bad_input: frozenset[int] = field(default_factory=frozenset)

    def classify(self, code: int) -> ExitClass:
        """Class of ``code``: SUCCESS for 0, UNCLASSIFIED for a code no class lists."""
        if code == 0:
            return ExitClass.SUCCESS
        if code in self.transient:
            return ExitClass.TRANSIENT
        if code in self.permanent:
            return ExitClass.PERMANENT
        if code in self.bad_input:
            return ExitClass.BAD_INPUT
        return ExitClass.UNCLASSIFIED


@dataclass(frozen=True)
class RetryPolicy:
    """How often a transient failure is retried, and the first wait (doubling after that)."""

    max_retries: int | None = None
    backoff_seconds: int = 0


@dataclass(frozen=True)
class GearbrokerExtension:
    """The parsed ``custom.gearbroker`` block (all defaults when it is absent)."""

    resources: Resources = field(default_factory=Resources)
    exit_codes: ExitCodeClasses = field(default_factory=ExitCodeClasses)
    runtime: str | None = None
    image_digest: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def parse_extension(custom: Mapping[str, Any]) -> GearbrokerExtension:
    """Typed view of ``custom.gearbroker`` from a manifest's (validated) ``custom``."""
    block = custom.get("gearbroker") or {}
    res = block.get("resources") or {}
    codes = block.get("exit-codes") or {}
    resources = Resources(
        cpus=float(res["cpus"]) if "cpus" in res else None,
        memory_bytes=parse_size(res["memory"]) if "memory" in res else None,
        gpus=int(res.get("gpus", 0)),
        walltime_seconds=parse_walltime(res["walltime"]) if "walltime" in res else None,
        disk_bytes=parse_size(res["disk"]) if "disk" in res else None,
    )
    exit_codes = ExitCodeClasses(
        transient=frozenset(codes.get("transient", ())),
        permanent=frozenset(codes.get("permanent", ())),
        bad_input=frozenset(codes.get("bad-input", ())),
    )
    retry_block = block.get("retry") or {}
    retry = RetryPolicy(
        max_retries=int(retry_block["max-retries"]) if "max-retries" in retry_block else None,
        backoff_seconds=parse_walltime(retry_block["backoff"]) if "backoff" in retry_block else 0,
    )
    return GearbrokerExtension(
        retry=retry,
        resources=resources,
        exit_codes=exit_codes,
        runtime=block.get("runtime"),
        image_digest=block.get("image-digest"),
    )


def extension_issues(custom: object, path: str = "$.custom") -> list[Issue]:
    """Semantic problems of ``custom.gearbroker`` the schema cannot see."""
    if not isinstance(custom, dict) or not isinstance(custom.get("gearbroker"), dict):
        return []
    base = child(path, "gearbroker")
    block = custom["gearbroker"]
    issues: list[Issue] = []
    res = block.get("resources")
    if isinstance(res, dict):
        for key, parse in (("memory", parse_size), ("disk", parse_size)):
            issues.extend(_positive(res, key, parse, child(base, "resources", key)))
        walltime_path = child(base, "resources", "walltime")
        issues.extend(_positive(res, "walltime", parse_walltime, walltime_path))
    codes = block.get("exit-codes")
    if isinstance(codes, dict):
        seen: dict[int, str] = {}
        for cls in _EXIT_CLASSES:
            values = codes.get(cls)
            if not isinstance(values, list):
                continue
            for index, code in enumerate(values):
                if isinstance(code, int) and code in seen and seen[code] != cls:
                    where = child(base, "exit-codes", cls, index)
                    issues.append(Issue(where, f"exit code {code} is also listed as {seen[code]}"))
                elif isinstance(code, int):
                    seen[code] = cls
    return issues


def _positive(
    block: Mapping[str, Any], key: str, parse: Callable[[int | str], int], path: str
) -> list[Issue]:
    value = block.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, int | str):
        return []
    try:
        amount = parse(value)
    except ValueError:
        return []  # the schema phase already reported the malformed value
    if amount <= 0:
        return [Issue(path, "must be greater than zero")]
    return []
