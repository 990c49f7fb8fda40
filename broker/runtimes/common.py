"""Checks and argv pieces shared by the runtime modules.

Everything here is pure: it validates a :class:`ContainerSpec` field or builds part of an
argv list, and raises :class:`InvalidInputError` for values a runtime's CLI could not express
without changing their meaning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from broker.task import ContainerSpec, Mount
from catalog.errors import InvalidInputError

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER = re.compile(r"^(\d{1,10}):(\d{1,10})$")


def cli_prefix(binary: str, env: Mapping[str, str]) -> list[str]:
    """``[binary]``, or ``["env", "K=V", ..., binary]`` when the CLI needs its own environment.

    Carrying the environment inside the argv keeps a command self-contained: it means the same
    when a backend runs it locally, writes it into a batch script or sends it over SSH.
    """
    if not binary or binary.startswith("-") or "=" in binary or "\x00" in binary:
        raise InvalidInputError(f"invalid runtime binary {binary!r}")
    for key, value in env.items():
        if not _ENV_KEY.match(key) or "\x00" in value:
            raise InvalidInputError(f"invalid environment variable for the runtime CLI: {key!r}")
    if not env:
        return [binary]
    return ["env", *(f"{key}={value}" for key, value in sorted(env.items())), binary]


def check_spec(spec: ContainerSpec, forbidden: str = "") -> None:
    """Reject what no runtime can run safely: option-like images, an empty command name,
    relative mount sources, and mount paths containing one of ``forbidden`` (characters the
    runtime's mount syntax uses as separators) or a newline."""
    if not spec.image or spec.image.startswith("-"):
        raise InvalidInputError(f"invalid image reference {spec.image!r}")
    if not spec.argv[0]:
        raise InvalidInputError("the container command name is empty")
    if not spec.workdir.startswith("/"):
        raise InvalidInputError(f"the working directory must be absolute: {spec.workdir!r}")
    for mount in spec.mounts:
        check_mount(mount, forbidden)


def check_mount(mount: Mount, forbidden: str = "") -> None:
    """Raise unless ``mount`` has an absolute source and paths free of ``forbidden``."""
    if not mount.source.startswith("/"):
        raise InvalidInputError(f"mount source must be an absolute path: {mount.source!r}")
    for path in (mount.source, mount.target):
        bad = sorted({ch for ch in path if ch in forbidden + "\n\r\x00"})
        if bad:
            raise InvalidInputError(
                f"mount path {path!r} contains {''.join(bad)!r}, which this runtime's mount "
                "syntax cannot express; rename the folder"
            )


def parse_user(user: str) -> tuple[int, int]:
    """``"uid:gid"`` (numeric) as a pair; anything else is an InvalidInputError."""
    match = _USER.match(user)
    if not match:
        raise InvalidInputError(f"container user must be numeric 'uid:gid', got {user!r}")
    return int(match.group(1)), int(match.group(2))


def format_cpus(cpus: float) -> str:
    """A CPU count as the CLIs print it (``1``, ``0.5``, ``2.25``)."""
    return f"{cpus:g}"


def flag_pairs(flag: str, values: Iterable[str]) -> list[str]:
    """``[flag, v1, flag, v2, ...]``: one argv element per value, never joined."""
    out: list[str] = []
    for value in values:
        out += [flag, value]
    return out
