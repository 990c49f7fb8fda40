"""SSHTransport: run argv lists on a remote login node through one reused paramiko connection.

The host key must already be in the known_hosts file (``RejectPolicy``: an unknown or changed
key is refused, never added).  Authentication uses the given private key file and/or the SSH
agent.  The remote command line is ``shlex.join(argv)`` (the remote shell splits it back into
exactly those words).  A connection found dropped when a command is about to start is opened
again once; a connection lost while a command runs raises :class:`CommandError` (the command
may have run) and the next command reconnects.  ``env`` is applied with ``env K=V ...``, adding
to the remote login environment rather than replacing it.
"""

from __future__ import annotations

import re
import shlex
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import paramiko

from broker.commands import DEFAULT_TIMEOUT_S, CommandError, CommandResult
from broker.transport import Transport
from catalog.errors import GearbrokerError, InvalidInputError

_CHUNK = 1 << 16
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SSHConnectionError(GearbrokerError):
    """The SSH login node cannot be reached, is not trusted, or refuses our credentials."""


class SSHTransport(Transport):
    """Runs commands on ``user@host:port`` over one shared SSH connection."""

    name = "ssh"

    def __init__(
        self,
        host: str,
        *,
        port: int = 22,
        user: str | None = None,
        key_file: str | None = None,
        known_hosts: str = "~/.ssh/known_hosts",
        use_agent: bool = True,
        connect_timeout: float = 10.0,
        keepalive_s: int = 30,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.key_file = str(Path(key_file).expanduser()) if key_file else None
        self.known_hosts = Path(known_hosts).expanduser()
        self.use_agent = use_agent
        self.connect_timeout = connect_timeout
        self.keepalive_s = keepalive_s
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self.connects = 0

    @property
    def where(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> CommandResult:
        args = [str(a) for a in argv]
        if env:
            bad = [key for key in env if not _ENV_KEY.fullmatch(key)]
            if bad:
                raise InvalidInputError(f"invalid environment variable names {bad!r}")
            args = ["env", *(f"{key}={value}" for key, value in env.items()), *args]
        channel = self._open_channel()
        try:
            channel.exec_command(shlex.join(args))
            stdout, stderr, code = self._exchange(channel, args, input, timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._drop()
            raise CommandError(
                args, None, "", str(exc), reason=f"lost the SSH connection to {self.where}"
            ) from exc
        finally:
            channel.close()
        result = CommandResult(tuple(args), code, stdout, stderr)
        if check and code != 0:
            raise CommandError(args, code, stdout, stderr)
        return result

    def _exchange(
        self,
        channel: paramiko.Channel,
        args: list[str],
        input: str | None,
        timeout: float | None,
    ) -> tuple[str, str, int]:
        """Feed ``input``, collect stdout/stderr until the exit status arrives or time runs out."""
        if input is not None:
            channel.sendall(input.encode())
        channel.shutdown_write()
        deadline = None if timeout is None else time.monotonic() + timeout
        out, err = bytearray(), bytearray()
        while True:
            busy = False
            while channel.recv_ready():
                out += channel.recv(_CHUNK)
                busy = True
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(_CHUNK)
                busy = True
            # sshd may send the exit status before the last output, so wait for EOF too; test
            # the end before the buffers (output arriving in between would be lost otherwise).
            ended = channel.exit_status_ready() and (channel.eof_received or channel.closed)
            if ended and not channel.recv_ready() and not channel.recv_stderr_ready():
                break
            if channel.closed and not channel.exit_status_ready():
                raise EOFError("the channel closed before the command's exit status arrived")
            if deadline is not None and time.monotonic() > deadline:
                raise CommandError(
                    args, None, out.decode(errors="replace"), err.decode(errors="replace"),
                    reason=f"timed out after {timeout} s on {self.where}",
                )  # fmt: skip
            if not busy:
                channel.status_event.wait(0.005)
        code = channel.recv_exit_status()
        return out.decode(errors="replace"), err.decode(errors="replace"), code

    def _open_channel(self) -> paramiko.Channel:
        """A session channel on the shared connection, reconnecting once if it dropped."""
        with self._lock:
            try:
                return self._session()
            except (paramiko.SSHException, EOFError, OSError):
                self._drop_locked()
            try:
                return self._session()
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self._drop_locked()
                raise SSHConnectionError(f"cannot open a session on {self.where}: {exc}") from exc

    def _session(self) -> paramiko.Channel:
        client = self._client or self._connect()
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise EOFError("the connection is closed")
        return transport.open_session(timeout=self.connect_timeout)

    def _connect(self) -> paramiko.SSHClient:
        if not self.known_hosts.is_file():
            raise SSHConnectionError(
                f"known_hosts file {self.known_hosts} is missing: add {self.host}'s host key "
                f"(ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts}) after checking it"
            )
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=self.key_file,
                allow_agent=self.use_agent,
                look_for_keys=False,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise SSHConnectionError(
                f"the host key of {self.where} does not match {self.known_hosts}: refusing to "
                "connect (the key changed, or someone is in between)"
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SSHConnectionError(
                f"{self.where} refused our credentials (key {self.key_file or 'none'}, agent "
                f"{'on' if self.use_agent else 'off'}): {exc}"
            ) from exc
        except (paramiko.SSHException, OSError) as exc:
            client.close()
            raise SSHConnectionError(f"cannot connect to {self.where}: {exc}") from exc
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(self.keepalive_s)
        self._client = client
        self.connects += 1
        return client

    def _drop(self) -> None:
        with self._lock:
            self._drop_locked()

    def _drop_locked(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        self._drop()
