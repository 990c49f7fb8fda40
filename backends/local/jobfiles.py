"""The files a local task's supervisor and its backend share inside the job folder.

``task.json`` and ``runtime.json`` describe the run; ``supervisor.pid`` names the one process
that owns it (created exclusively, its mtime is a heartbeat); ``cancel`` asks it to stop;
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
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": utc_now()}
    return write_exclusive(job_dir / PID_FILE, json.dumps(owner))


def read_owner(job_dir: Path) -> Owner | None:
    path = job_dir / PID_FILE
    try:
        data = json.loads(path.read_text())
        touched = path.stat().st_mtime
    except FileNotFoundError:
        return None
    return Owner(int(data["pid"]), str(data["host"]), str(data["started"]), touched)


def owner_alive(job_dir: Path, owner: Owner) -> bool:
    """Whether ``owner`` still supervises ``job_dir`` (by /proc here, by heartbeat elsewhere)."""
    if owner.host != socket.gethostname():
        return time.time() - owner.touched < STALE_S
    return is_supervisor(owner.pid, job_dir)


def is_supervisor(pid: int, job_dir: Path) -> bool:
    """Whether process ``pid`` on this host is a live supervisor of ``job_dir``."""
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        argv = (proc / "cmdline").read_bytes().split(b"\x00")
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return (
        state not in ("Z", "X")
        and SUPERVISOR_MODULE.encode() in argv
        and (str(job_dir).encode() in argv)
    )


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
