"""SSHTransport against the private test sshd: quoting, I/O, errors, trust, reconnection."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.commands import CommandError
from broker.ssh import SSHConnectionError, SSHTransport
from tests.fixtures.engines import SshLogin


def transport_for(login: SshLogin, **overrides: object) -> SSHTransport:
    options: dict[str, object] = {
        "port": login.port,
        "user": login.user,
        "key_file": str(login.key),
        "known_hosts": str(login.known_hosts),
        "use_agent": False,
        "connect_timeout": 5.0,
    }
    options.update(overrides)
    return SSHTransport(login.host, **options)  # type: ignore[arg-type]


@pytest.fixture
def ssh(ssh_login: SshLogin) -> Iterator[SSHTransport]:
    transport = transport_for(ssh_login)
    yield transport
    transport.close()


def test_words_arrive_unchanged(ssh: SSHTransport) -> None:
    words = ["a b", "$(id)", "`id`", "it's", 'q"q', "new\nline", "*", "~", ";", ""]
    result = ssh.run(["printf", "%s\\0", *words])
    assert result.stdout.split("\0")[:-1] == words
    assert result.argv == ("printf", "%s\\0", *words)


def test_stdin_env_stdout_stderr_and_exit_code(ssh: SSHTransport) -> None:
    assert ssh.run(["cat"], input="line 1\nline 2\n").stdout == "line 1\nline 2\n"
    assert ssh.run(["sh", "-c", 'echo "$GB_X"'], env={"GB_X": "v a l"}).stdout == "v a l\n"
    with pytest.raises(CommandError) as caught:
        ssh.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    error = caught.value
    assert (error.returncode, error.stdout, error.stderr) == (3, "out\n", "err\n")
    assert "sh -c" in str(error) and "err" in str(error)
    result = ssh.run(["sh", "-c", "exit 4"], check=False)
    assert result.returncode == 4


def test_large_output_is_complete(ssh: SSHTransport) -> None:
    result = ssh.run(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x; echo end >&2"])
    assert len(result.stdout) == 3_000_000 and result.stderr == "end\n"


def test_command_timeout(ssh: SSHTransport) -> None:
    with pytest.raises(CommandError, match=r"timed out after 0.5 s"):
        ssh.run(["sleep", "5"], timeout=0.5)
    assert ssh.run(["echo", "still usable"]).stdout == "still usable\n"


def test_one_connection_is_reused(ssh: SSHTransport) -> None:
    for _ in range(5):
        ssh.run(["true"])
    assert ssh.connects == 1


def test_reconnects_once_after_a_drop(ssh: SSHTransport) -> None:
    ssh.run(["true"])
    client = ssh._client
    assert client is not None
    transport = client.get_transport()
    assert transport is not None
    transport.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    assert ssh.run(["echo", "back"]).stdout == "back\n"
    assert ssh.connects == 2


def test_unknown_host_key_is_refused(ssh_login: SshLogin, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(SSHConnectionError, match="cannot connect"):
        transport_for(ssh_login, known_hosts=str(empty)).run(["true"])


def test_changed_host_key_is_refused(ssh_login: SshLogin, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    key = " ".join((other.with_suffix(".pub")).read_text().split()[:2])
    known = tmp_path / "known_hosts"
    known.write_text(f"[{ssh_login.host}]:{ssh_login.port} {key}\n")
    with pytest.raises(SSHConnectionError, match="does not match"):
        transport_for(ssh_login, known_hosts=str(known)).run(["true"])


def test_missing_known_hosts_file_is_explained(ssh_login: SshLogin, tmp_path: Path) -> None:
    with pytest.raises(SSHConnectionError, match="ssh-keyscan"):
        transport_for(ssh_login, known_hosts=str(tmp_path / "none")).run(["true"])


def test_unauthorized_key_is_refused(ssh_login: SshLogin, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(SSHConnectionError, match="refused our credentials"):
        transport_for(ssh_login, key_file=str(stranger)).run(["true"])


def test_nothing_listening_is_a_connection_error(ssh_login: SshLogin) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SSHConnectionError, match="cannot connect"):
        transport_for(ssh_login, port=port).run(["true"])
