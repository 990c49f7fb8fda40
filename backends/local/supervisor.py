"""Runs one task's container and records how it ended; survives whoever started it.

Usage: ``python -m backends.local.supervisor JOB_DIR`` (started in its own session), or
forked by ``python -m backends.local.supervisor --serve SOCKET`` (:mod:`.forkserver`).  It owns
the task through ``supervisor.pid`` (so a task never runs twice), streams the container's
merged output into a capped ``logs/output.log``, stops the container on a ``cancel`` marker,
SIGTERM or walltime, and writes ``exit.json`` last.  See :mod:`backends.local.jobfiles`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from backends.base import BackendState
from backends.local import jobfiles
from backends.local.jobfiles import ExitRecord
from backends.local.logcap import CappedLog
from broker.commands import CommandError, run_command
from broker.runtimes.base import ContainerRuntime
from broker.task import TaskSpec
from broker.transport import LocalTransport
from catalog.errors import GearbrokerError

log = logging.getLogger(__name__)

#: Seconds between a polite stop (stop command or SIGTERM) and SIGKILL.
STOP_GRACE_S = 10.0
POLL_S = 0.1
#: After the container process exits, how long to keep reading output its children hold open.
DRAIN_S = 2.0
_READ_CHUNK = 1 << 20
#: Set by SIGTERM (see :func:`main`): a cancel request, like the ``cancel`` marker.
_terminated = threading.Event()
_MESSAGE_TAIL = 1000


@dataclass
class _Run:
    """What the supervision loop learns while the container runs."""

    stop_reason: BackendState | None = None
    stop_deadline: float = 0.0
    returncode: int | None = None


class Supervisor:
    """Supervises the task in one job folder."""

    def __init__(self, job_dir: Path, on_exit: Callable[[], None] | None = None) -> None:
        self.job_dir = job_dir
        self.on_exit = on_exit
        self.task = TaskSpec.from_json((job_dir / jobfiles.TASK_FILE).read_text())
        record = json.loads((job_dir / jobfiles.RUNTIME_FILE).read_text())
        self.runtime: ContainerRuntime = jobfiles.load_runtime(record)

    def _cancel_requested(self) -> bool:
        return _terminated.is_set() or (self.job_dir / jobfiles.CANCEL_FILE).exists()

    def run(self) -> ExitRecord:
        """Run the container to its end (or stop) and return what happened."""
        started = jobfiles.utc_now()
        if self._cancel_requested():
            return self._record(BackendState.CANCELLED, None, "cancelled before it started", None)
        spec = self.task.container
        argv = self.runtime.argv(spec)
        output = CappedLog(self.job_dir / jobfiles.LOG_FILE, self.task.log_limit_bytes)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.job_dir,
            )
        except OSError as exc:
            output.close()
            return self._record(
                BackendState.FAILED, None, f"could not start {argv[0]}: {exc}", started
            )
        try:
            run = self._supervise(proc, output)
        finally:
            output.close()
        if self.on_exit is not None:
            self.on_exit()
        return self._finish(run, output, started)

    def _supervise(self, proc: subprocess.Popen[bytes], output: CappedLog) -> _Run:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _READ_CHUNK)
        run = _Run()
        walltime = self.task.resources.walltime_s
        deadline = time.monotonic() + walltime if walltime else None
        beat = time.monotonic()
        exited_at: float | None = None
        while True:
            ready, _, _ = select.select([fd], [], [], POLL_S)
            if ready:
                data = os.read(fd, _READ_CHUNK)
                if not data:
                    break
                output.write(data)
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > DRAIN_S:
                break
            if run.stop_reason is None and self._cancel_requested():
                self._stop(proc, run, BackendState.CANCELLED)
            if run.stop_reason is None and deadline is not None and now > deadline:
                self._stop(proc, run, BackendState.TIMEOUT)
            if run.stop_reason is not None and exited_at is None and now > run.stop_deadline:
                _kill_group(proc.pid, signal.SIGKILL)
            if now - beat > jobfiles.HEARTBEAT_S:
                os.utime(self.job_dir / jobfiles.PID_FILE)
                beat = now
        proc.stdout.close()
        run.returncode = proc.wait()
        if run.stop_reason is not None:
            _kill_group(proc.pid, signal.SIGKILL)
        return run

    def _stop(self, proc: subprocess.Popen[bytes], run: _Run, reason: BackendState) -> None:
        """Ask the container to stop; the loop SIGKILLs its process group after the grace."""
        run.stop_reason = reason
        run.stop_deadline = time.monotonic() + STOP_GRACE_S
        stop = self.runtime.stop_argv(self.task.container)
        if stop is None:
            _kill_group(proc.pid, signal.SIGTERM)
            return
        try:
            run_command(stop, timeout=STOP_GRACE_S + 5, check=False)
        except CommandError as exc:
            log.warning("stop command failed: %s", exc)
            _kill_group(proc.pid, signal.SIGTERM)

    def _finish(self, run: _Run, output: CappedLog, started: str) -> ExitRecord:
        code = (
            run.returncode
            if run.returncode is None or run.returncode >= 0
            else 128 - run.returncode
        )
        if run.stop_reason is BackendState.CANCELLED:
            state, message = BackendState.CANCELLED, "cancelled while running"
        elif run.stop_reason is BackendState.TIMEOUT:
            walltime = self.task.resources.walltime_s
            state, message = BackendState.TIMEOUT, f"walltime of {walltime} s exceeded"
        elif code == 0:
            state, message = BackendState.COMPLETED, None
        elif self._oom_killed():
            state, message = (
                BackendState.OUT_OF_MEMORY,
                f"killed for exceeding its memory limit (exit {code})",
            )
        else:
            state, message = BackendState.FAILED, f"exit code {code}{self._log_tail()}"
        if run.stop_reason is not None or not self.runtime.removes_itself(self.task.container):
            self._remove()
        return self._record(state, code, message, started, output)

    def _oom_killed(self) -> bool:
        try:
            return self.runtime.oom_killed(
                self.task.container, LocalTransport(), cwd=str(self.job_dir)
            )
        except GearbrokerError as exc:
            log.warning("could not ask the runtime about OOM: %s", exc)
            return False

    def _remove(self) -> None:
        remove = self.runtime.remove_argv(self.task.container)
        if remove is None:
            return
        try:
            run_command(remove, timeout=60, check=False)
        except CommandError as exc:
            log.warning("remove command failed: %s", exc)

    def _log_tail(self) -> str:
        """The end of the log, so a failure's message carries the runtime's or gear's error."""
        path = self.job_dir / jobfiles.LOG_FILE
        with path.open("rb") as src:
            src.seek(max(path.stat().st_size - _MESSAGE_TAIL, 0))
            text = src.read().decode(errors="replace").strip()
        return f": {text}" if text else ""

    def _record(
        self,
        state: BackendState,
        code: int | None,
        message: str | None,
        started: str | None,
        output: CappedLog | None = None,
    ) -> ExitRecord:
        dropped = output.dropped if output else 0
        if dropped:
            note = f"log capped at {self.task.log_limit_bytes} bytes, {dropped} bytes dropped"
            message = f"{message}; {note}" if message else note
        return ExitRecord(
            state=state,
            exit_code=code,
            message=message,
            started=started,
            finished=jobfiles.utc_now(),
            log_bytes=output.total if output else 0,
            log_truncated=bool(dropped),
        )


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def supervise(job_dir: Path, on_exit: Callable[[], None] | None = None) -> ExitRecord | None:
    """Run the task unless it has an exit record or another supervisor; None if not run here.

    ``on_exit()`` is called once the container has ended, before it is inspected and removed
    and before the exit record is written.
    """
    if jobfiles.read_exit(job_dir) is not None or not jobfiles.claim(job_dir):
        return None
    if jobfiles.read_exit(job_dir) is not None:
        return None
    try:
        record = Supervisor(job_dir, on_exit).run()
    except Exception as exc:
        log.exception("supervisor failed")
        record = ExitRecord(
            BackendState.FAILED, None, f"supervisor error: {exc}", None, jobfiles.utc_now()
        )
    jobfiles.write_exit(job_dir, record)
    return record


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _terminated.set()


def run_here(job_dir: Path, on_exit: Callable[[], None] | None = None) -> int:
    """Supervise ``job_dir`` in this process, as the program does (SIGTERM: cancel)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    supervise(job_dir, on_exit)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Program entry: ``JOB_DIR`` supervises one task; ``--serve SOCKET`` is a fork server."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--serve":
        from backends.local import forkserver

        return forkserver.serve(args[1], run_here)
    if len(args) != 1:
        return 2
    return run_here(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
