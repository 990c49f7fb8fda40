"""A fork server for supervisors: a pre-imported process that forks one per task.

Starting ``python -m backends.local.supervisor`` costs ~0.2 s of interpreter start and imports
per task; forking a process that has done both costs ~2 ms.  The server is the supervisor
program itself (``python -m <SUPERVISOR_MODULE> --serve SOCKET``), one per client process
and supervisor module, started on first use in its own session.  It is single-threaded, so
forking it is safe (the multi-threaded Dask worker is never forked).

Protocol, over a Unix socket in a private (0700) folder, peers of another uid refused: the
client sends one JSON line ``{"job_dir": ..., "env": {...}}``; the server forks a child that
calls :func:`setsid`, adopts ``env`` (so the task sees the client's environment of now, as a
spawned process would) and the job folder as working directory, sends ``started`` and runs
the supervisor, holding the connection open until it exits.  It sends :data:`EXITED` when
the container has ended (before the runtime removes it and the exit record is written); EOF
tells the client that the supervisor is gone.  Each child is its own session, so a task
outlives the client and the server; the pid file (:mod:`backends.local.jobfiles`) still
guarantees that a task runs at most once.

The server exits once it has no live child and its client is gone (EOF on its stdin, a pipe
the client holds) or it had no request for :data:`IDLE_S` seconds.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from backends.local import jobfiles

#: A server without children exits after this many seconds without a request.
IDLE_S = 60.0
#: How long a client waits for a new server to listen, and for a fork to be acknowledged.
START_TIMEOUT_S = 30.0
_ACK = b"started\n"
EXITED = b"exited\n"
_MAX_REQUEST = 4 << 20
_UCRED = struct.Struct("3i")
#: ``run(job_dir, on_exit)``: supervises the task, calls ``on_exit()`` when its container ended.
Runner = Callable[[Path, Callable[[], None]], int]


# -- client side -----------------------------------------------------------------------------


@dataclass
class _Server:
    proc: subprocess.Popen[bytes]
    socket_path: str
    lifeline: int  # write end of the server's stdin; closed when this process exits


_servers: dict[tuple[int, str], _Server] = {}
_servers_lock = threading.Lock()


def launch(job_dir: Path) -> socket.socket | None:
    """Have a fork server start the supervisor of ``job_dir``.

    Returns the connection, which carries :data:`EXITED` once the container has ended and
    reaches EOF when the supervisor has exited, or None when no fork server could be started
    (the caller then spawns the supervisor itself).
    """
    for _ in range(2):
        server = _server(jobfiles.SUPERVISOR_MODULE)
        if server is None:
            return None
        conn = _request(server, job_dir)
        if conn is not None:
            return conn
        _forget(server)  # it exited (idle) meanwhile: start a fresh one
    return None


def _server(module: str) -> _Server | None:
    key = (os.getpid(), module)
    with _servers_lock:
        server = _servers.get(key)
        if server is not None and server.proc.poll() is None:
            return server
        if server is not None:  # it died: killed, or gone idle meanwhile
            _close_lifeline(server)
            shutil.rmtree(os.path.dirname(server.socket_path), ignore_errors=True)
        server = _start(module)
        if server is None:
            _servers.pop(key, None)
        else:
            _servers[key] = server
        return server


def _forget(server: _Server) -> None:
    with _servers_lock:
        for key, known in list(_servers.items()):
            if known is server:
                del _servers[key]
    _close_lifeline(server)


def _close_lifeline(server: _Server) -> None:
    with contextlib.suppress(OSError):
        os.close(server.lifeline)


def _start(module: str) -> _Server | None:
    """Start a server and wait until it listens; None if it exits first."""
    folder = tempfile.mkdtemp(prefix="gb-forkserver-")
    path = os.path.join(folder, "socket")
    read_end, write_end = os.pipe()
    try:
        with open(os.path.join(folder, "server.log"), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "--serve", path],
                stdin=read_end,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                start_new_session=True,
            )
    except OSError:
        os.close(write_end)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    finally:
        os.close(read_end)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            os.close(write_end)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            shutil.rmtree(folder, ignore_errors=True)
            return None
        time.sleep(0.002)
    return _Server(proc, path, write_end)


def _request(server: _Server, job_dir: Path) -> socket.socket | None:
    """Send one request; the connection once the child acknowledged it, else None."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(START_TIMEOUT_S)
        conn.connect(server.socket_path)
        request = {"job_dir": str(job_dir), "env": _environment()}
        conn.sendall(json.dumps(request).encode() + b"\n")
        reply = b""
        while len(reply) < len(_ACK):
            data = conn.recv(len(_ACK) - len(reply))
            if not data:
                break
            reply += data
    except OSError:
        conn.close()
        return None
    if reply != _ACK:
        conn.close()
        return None
    return conn


def _environment() -> dict[str, str]:
    """A snapshot of ``os.environ`` (another thread may change it while it is copied)."""
    while True:
        try:
            return dict(os.environ)
        except RuntimeError:
            continue


# -- server side -----------------------------------------------------------------------------


def serve(socket_path: str, run: Runner) -> int:
    """The server loop: fork a child running ``run(job_dir)`` per request (see module doc)."""
    listener: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    assert listener is not None
    listener.bind(socket_path)
    listener.listen(64)
    gc.freeze()  # children then share the imported objects' pages instead of copying them
    children: set[int] = set()
    client_alive = True
    last_request = time.monotonic()
    while True:
        _reap(children)
        idle = time.monotonic() - last_request > IDLE_S
        if listener is not None and (idle or not client_alive):
            listener.close()
            listener = None
            _remove_socket(socket_path)
        if listener is None and not children:
            _remove_folder(socket_path)
            return 0
        watched = [listener.fileno()] if listener is not None else []
        ready, _, _ = select.select([*watched, *([0] if client_alive else [])], [], [], 0.2)
        if 0 in ready and not os.read(0, 4096):
            client_alive = False
        if listener is not None and listener.fileno() in ready:
            conn, _ = listener.accept()
            last_request = time.monotonic()
            pid = _fork_for(conn, listener, run)
            if pid is not None:
                children.add(pid)


def _reap(children: set[int]) -> None:
    for pid in list(children):
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                continue
        children.discard(pid)


def _remove_socket(socket_path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)


def _remove_folder(socket_path: str) -> None:
    """Remove the socket's folder when only an empty server log is left in it."""
    folder = os.path.dirname(socket_path)
    log = os.path.join(folder, "server.log")
    with contextlib.suppress(OSError):
        if os.path.getsize(log) == 0:
            os.unlink(log)
        os.rmdir(folder)


def _fork_for(conn: socket.socket, listener: socket.socket, run: Runner) -> int | None:
    """Read the request on ``conn`` and fork its child; the child's pid, or None if refused."""
    with conn:
        try:
            request = _read_request(conn)
        except (OSError, ValueError, KeyError) as exc:
            print(f"refused a request: {exc}", file=sys.stderr, flush=True)
            return None
        try:
            pid = os.fork()
        except OSError as exc:
            print(f"cannot fork: {exc}", file=sys.stderr, flush=True)
            return None
        if pid == 0:
            _child(conn, listener, request, run)
    return pid


def _read_request(conn: socket.socket) -> dict[str, Any]:
    _pid, uid, _gid = _UCRED.unpack(
        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    if uid != os.getuid():
        raise ValueError(f"peer uid {uid} is not {os.getuid()}")
    conn.settimeout(5.0)
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk or len(data) + len(chunk) > _MAX_REQUEST:
            raise ValueError("incomplete or oversized request")
        data += chunk
    request: dict[str, Any] = json.loads(data)
    if not isinstance(request["job_dir"], str) or not isinstance(request["env"], dict):
        raise ValueError("malformed request")
    return request


def _child(
    conn: socket.socket,
    listener: socket.socket,
    request: dict[str, Any],
    run: Runner,
) -> NoReturn:
    """In the forked child: detach, take the job's folder, log and environment, then run."""
    code = 1
    try:
        listener.close()
        os.setsid()
        job_dir = Path(request["job_dir"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # drop the lifeline pipe
        os.close(null)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        log = os.open(job_dir / jobfiles.SUPERVISOR_LOG, flags, 0o666)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        _adopt_environment(request["env"])
        os.chdir(job_dir)
        conn.setblocking(True)
        conn.sendall(_ACK)
        code = run(job_dir, lambda: _notify(conn, EXITED))
    except BaseException:  # the child must always end in os._exit
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _notify(conn: socket.socket, message: bytes) -> None:
    """Tell the client; it may be gone, which changes nothing for the task."""
    with contextlib.suppress(OSError):
        conn.sendall(message)


def _adopt_environment(env: dict[str, str]) -> None:
    """The client's environment, and its PYTHONPATH entries on sys.path (as at startup)."""
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in env.items()})
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[1:1] = extra
