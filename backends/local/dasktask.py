"""The Dask task of the local backend: have a task's supervisor started, follow it to its end.

:func:`run_supervised` runs in a Dask worker thread (in this process for the default
LocalCluster, or in an external cluster's worker).  It asks this process's fork server
(:mod:`backends.local.forkserver`) for a supervisor, or spawns ``python -m
backends.local.supervisor JOB_DIR`` when no fork server can start, and returns the task's exit
record.  The job folder (:mod:`backends.local.jobfiles`) stays the only shared state.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from distributed import secede

from backends.errors import BackendError
from backends.local import forkserver, jobfiles
from backends.local.jobfiles import ExitRecord

#: How often a Dask task re-checks a supervisor it did not start itself.
WAIT_POLL_S = 0.2
#: Sessions of LocalBackends of this process that are closing: their in-process waits end.
closing: set[str] = set()


def run_supervised(job_dir: str, session: str = "") -> dict[str, Any]:
    """Dask task body: start the job's supervisor detached, wait for its exit record.

    The supervisor is forked by this process's fork server (:mod:`.forkserver`), or spawned
    as its own program when no fork server can start.  Once a forked supervisor reports that
    the container ended, the task secedes from the worker's thread pool: the next task may
    start while this one's container is removed (its Dask resources stay held until the exit
    record exists).  Safe to run more than once (Dask retries after a worker dies): a second
    supervisor finds the first one's pid file and leaves, and this then waits on the first
    one.  Gives up (the supervisor runs on) when the in-process backend of ``session`` closes.
    """
    path = Path(job_dir)
    record = jobfiles.read_exit(path)
    if record is None:
        conn = forkserver.launch(path)
        if conn is None:
            _spawn_and_wait(path, session)
        else:
            with conn:
                _follow(conn, session)
        record = _wait_for_exit(path, session)
    return record.to_dict()


def _spawn_and_wait(job_dir: Path, session: str) -> None:
    with (job_dir / jobfiles.SUPERVISOR_LOG).open("ab") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", jobfiles.SUPERVISOR_MODULE, str(job_dir)],
            stdin=subprocess.DEVNULL,
            stdout=errors,
            stderr=subprocess.STDOUT,
            cwd=job_dir,
            start_new_session=True,
        )
    while True:
        _check_open(session)
        try:
            proc.wait(timeout=WAIT_POLL_S)
            return
        except subprocess.TimeoutExpired:
            pass


def _follow(conn: socket.socket, session: str) -> None:
    """Wait until the forked supervisor holding the other end of ``conn`` has exited,
    leaving the worker's thread pool once it reports that the container ended."""
    conn.settimeout(WAIT_POLL_S)
    seceded = False
    while True:
        _check_open(session)
        try:
            data = conn.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return
        if not data:
            return
        if not seceded:  # the one message after the acknowledgement: forkserver.EXITED
            seceded = True
            with contextlib.suppress(ValueError):  # not running in a Dask worker
                secede()  # type: ignore[no-untyped-call]


def _check_open(session: str) -> None:
    if session in closing:
        raise BackendError("the backend closed; the supervisor carries on alone")


def _wait_for_exit(job_dir: Path, session: str) -> ExitRecord:
    while True:
        record = jobfiles.read_exit(job_dir)
        if record is not None:
            return record
        owner = jobfiles.read_owner(job_dir)
        if owner is None or not jobfiles.owner_alive(job_dir, owner):
            record = jobfiles.read_exit(job_dir)
            if record is not None:
                return record
            if owner is None:
                raise BackendError(f"{job_dir}: the supervisor did not start: {_log_end(job_dir)}")
            raise BackendError(f"{job_dir}: {jobfiles.LOST_MESSAGE}")
        _check_open(session)
        time.sleep(WAIT_POLL_S)


def _log_end(job_dir: Path) -> str:
    """The last lines of the supervisor's own log (its traceback, if it crashed)."""
    try:
        text = (job_dir / jobfiles.SUPERVISOR_LOG).read_text(errors="replace")
    except FileNotFoundError:
        return "no supervisor log"
    return "\n".join(text.strip().splitlines()[-5:]) or "empty supervisor log"
