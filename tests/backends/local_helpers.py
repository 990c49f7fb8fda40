"""Polling helpers shared by the local backend's tests."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from backends.base import BackendState, TaskStatus
from backends.local.backend import LocalBackend

TERMINAL = {state for state in BackendState if state.terminal}


def wait_for(
    backend: LocalBackend, ids: Sequence[str], done: set[BackendState], timeout: float = 30
) -> list[TaskStatus]:
    """Poll ``status`` until every task is in ``done``; AssertionError after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        statuses = backend.status(ids)
        if all(s.state in done for s in statuses):
            return statuses
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {done}: {statuses}")
        time.sleep(0.05)


def terminal(backend: LocalBackend, ids: Sequence[str], timeout: float = 30) -> list[TaskStatus]:
    return wait_for(backend, ids, TERMINAL, timeout)


def wait_file(path: Path, timeout: float = 20) -> str:
    """The content of ``path`` once it exists and is not blank."""
    end = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        if time.monotonic() > end:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)
    return path.read_text()


def processes_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\x00", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if marker in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def pid_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"
