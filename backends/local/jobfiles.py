"""The files a local task's supervisor and its backend share inside the job folder.

``task.json`` and ``runtime.json`` describe the run; ``supervisor.pid`` names the one process
that owns it (created exclusively, its mtime is a heartbeat; pid plus the process's start time
identify it on its host); ``cancel`` asks it to stop;
``exit.json`` records the outcome (created exclusively, so the first writer wins).
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends.base import BackendState, TaskStatus
from backends.errors import BackendError
from broker.runtimes import RUNTIMES, make_runtime
from broker.runtimes.base import ContainerRuntime

TASK_FILE = "task.json"
RUNTIME_FILE = "runtime.json"
PID_FILE = "supervisor.pid"
EXIT_FILE = "exit.json"
CANCEL_FILE = "cancel"
LOG_FILE = "logs/output.log"
SUPERVISOR_LOG = "logs/supervisor.log"
SUPERVISOR_MODULE = "backends.local.supervisor"
#: The supervisor touches its pid file this often; other hosts judge liveness by it.
HEARTBEAT_S = 5.0
#: A pid file from another host not touched for this long belongs to a dead supervisor.
STALE_S = 60.0
LOST_MESSAGE = "no supervisor and no exit record: the task was lost"


def utc_now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class ExitRecord:
    """The content of ``exit.json``: how the task ended."""

    state: BackendState
    exit_code: int | None
    message: str | None
    started: str | None
    finished: str
    log_bytes: int = 0
    log_truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExitRecord:
        return cls(**{**data, "state": BackendState(data["state"])})

    def status(self, external_id: str) -> TaskStatus:
        return TaskStatus(
            external_id=external_id,
            state=self.state,
            exit_code=self.exit_code,
            message=self.message,
            started=datetime.fromisoformat(self.started) if self.started else None,
            finished=datetime.fromisoformat(self.finished),
        )


@dataclass(frozen=True)
class Owner:
    """The supervisor named by ``supervisor.pid``."""

    pid: int
    host: str
    started: str
    touched: float
    #: The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22).
    starttime: int | None = None


def write_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` in one step unless it exists; True if created here."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


def read_exit(job_dir: Path) -> ExitRecord | None:
    try:
        text = (job_dir / EXIT_FILE).read_text()
    except FileNotFoundError:
        return None
    return ExitRecord.from_dict(json.loads(text))


def write_exit(job_dir: Path, record: ExitRecord) -> bool:
    """Record the outcome unless one is recorded already; True if this call recorded it."""
    return write_exclusive(job_dir / EXIT_FILE, json.dumps(record.to_dict(), sort_keys=True))


def claim(job_dir: Path) -> bool:
    """Make this process the task's one supervisor; False if a pid file exists already."""
    pid = os.getpid()
    owner = {
        "pid": pid,
        "host": socket.gethostname(),
        "started": utc_now(),
        "starttime": _starttime(pid),
    }
    return write_exclusive(job_dir / PID_FILE, json.dumps(owner))


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` from field 3 (state) on; None when there is no such process."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[-1].split()


def _starttime(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def read_owner(job_dir: Path) -> Owner | None:
    path = job_dir / PID_FILE
    try:
        data = json.loads(path.read_text())
        touched = path.stat().st_mtime
    except FileNotFoundError:
        return None
    starttime = data.get("starttime")
    return Owner(
        int(data["pid"]),
        str(data["host"]),
        str(data["started"]),
        touched,
        int(starttime) if starttime is not None else None,
    )


def owner_alive(job_dir: Path, owner: Owner) -> bool:
    """Whether ``owner`` still supervises ``job_dir`` (by /proc here, by heartbeat elsewhere)."""
    if owner.host != socket.gethostname():
        return time.time() - owner.touched < STALE_S
    return is_supervisor(owner.pid, job_dir, owner.starttime)


def is_supervisor(pid: int, job_dir: Path, starttime: int | None = None) -> bool:
    """Whether process ``pid`` on this host is a live supervisor of ``job_dir``.

    With the ``starttime`` its pid file recorded, the live process of that pid and start time
    is the owner (a forked supervisor has its fork server's command line); without, its
    command line must name the supervisor module and ``job_dir``.
    """
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    if starttime is not None:
        return int(fields[19]) == starttime
    try:
        argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\x00")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return SUPERVISOR_MODULE.encode() in argv and str(job_dir).encode() in argv


def runtime_record(runtime: ContainerRuntime, options: dict[str, Any]) -> dict[str, Any]:
    """What ``runtime.json`` holds: enough to rebuild ``runtime`` in another process."""
    cls = type(runtime)
    return {
        "name": runtime.name,
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "options": options,
    }


def load_runtime(record: dict[str, Any]) -> ContainerRuntime:
    """Rebuild the runtime of a :func:`runtime_record`: a registered one by name, else by class."""
    name, options = str(record["name"]), record.get("options", {})
    if name in RUNTIMES:
        return make_runtime(name, **options)
    module_name, _, qualname = str(record["class"]).partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise BackendError(f"cannot load runtime {record['class']!r}: {exc}") from exc
    if not (isinstance(target, type) and issubclass(target, ContainerRuntime)):
        raise BackendError(f"{record['class']!r} is not a container runtime")
    runtime: ContainerRuntime = target(**options)
    return runtime
