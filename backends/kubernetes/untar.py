"""Unpack a pod's output archive into the job folder, treating the archive as hostile.

Contract of :func:`extract_outputs`: only regular files and folders below ``output_rel``
(the output folder's path relative to the job folder, as archived by the pod) are written,
under ``<job_dir>/<output_rel>``.  A member is skipped (and named in the result) when it is
absolute, has a ``..`` component, lies outside ``output_rel``, is a link, device or FIFO, or
would pass through anything that is not a real folder.  Files are created without following
symlinks (``O_NOFOLLOW``) with mode 0644 (0755 when the owner could execute them).
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO

from backends.errors import BackendError


class OutputArchiveError(BackendError):
    """The output archive could not be read or unpacked."""


def member_parts(name: str, output_rel: str) -> list[str] | None:
    """The path components of ``name`` below ``output_rel``; None when it is not there."""
    if name.startswith("/") or "\x00" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    prefix = list(PurePosixPath(output_rel).parts)
    if parts[: len(prefix)] != prefix:
        return None
    return parts[len(prefix) :]


def _folder(root: Path, parts: list[str]) -> Path | None:
    """``root/parts...`` as real folders (created as needed); None if a component is not one."""
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            return None
        if not current.exists():
            current.mkdir(mode=0o755)
        elif not current.is_dir():
            return None
    return current


def _write(source: IO[bytes], target: Path, executable: bool) -> None:
    mode = 0o755 if executable else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    fd = os.open(target, flags, mode)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, 1024 * 1024)
    os.chmod(target, mode)


def extract_outputs(archive: Path, job_dir: Path, output_rel: str) -> list[str]:
    """Unpack ``archive`` (see the module docstring); returns the skipped member names."""
    root = job_dir / output_rel
    root.mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
    try:
        with tarfile.open(archive, "r:") as tar:
            for member in tar:
                parts = member_parts(member.name, output_rel)
                if parts is None or not (member.isfile() or member.isdir()):
                    skipped.append(member.name)
                    continue
                if not parts:
                    continue
                if member.isdir():
                    if _folder(root, parts) is None:
                        skipped.append(member.name)
                    continue
                folder = _folder(root, parts[:-1])
                target = folder / parts[-1] if folder is not None else None
                if target is None or target.is_symlink() or target.is_dir():
                    skipped.append(member.name)
                    continue
                source = tar.extractfile(member)
                if source is None:
                    skipped.append(member.name)
                    continue
                with source:
                    _write(source, target, bool(member.mode & 0o100))
    except (tarfile.TarError, OSError) as exc:
        raise OutputArchiveError(f"cannot unpack the outputs into {root}: {exc}") from exc
    return skipped
