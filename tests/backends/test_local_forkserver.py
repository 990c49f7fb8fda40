"""The local backend's fork server: tasks outlive it, it follows its client, environments."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.base import BackendState
from backends.local import forkserver, jobfiles
from backends.local.backend import LocalBackend
from broker.task import ContainerSpec, TaskSpec
from tests.backends.forkserver_helpers import SlowRemoveRuntime
from tests.backends.hostruntime import HostRuntime
from tests.backends.local_helpers import pid_gone, terminal, wait_file, wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Supervisors rebuild the test runtimes: they must import this package."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))


@pytest.fixture
def backend() -> Iterator[LocalBackend]:
    local = LocalBackend(max_concurrent=1, resources={"cpus": 4})
    yield local
    local.close()


def make_task(job_dir: Path, script: str, job_id: int = 1) -> TaskSpec:
    container = ContainerSpec(name=f"t{job_id}", image="host", argv=["sh", "-c", script])
    return TaskSpec(job_id=job_id, attempt=1, job_dir=str(job_dir), container=container)


def this_server() -> forkserver._Server:
    [server] = [s for (pid, _), s in forkserver._servers.items() if pid == os.getpid()]
    return server


def test_supervisor_is_forked_and_the_task_outlives_the_server(
    backend: LocalBackend, tmp_path: Path
) -> None:
    external_id = backend.submit(make_task(tmp_path / "job", "sleep 1; echo done"), HostRuntime())
    wait_for(backend, [external_id], {BackendState.RUNNING})
    owner = jobfiles.read_owner(tmp_path / "job")
    assert owner is not None and owner.starttime is not None
    server = this_server().proc.pid
    assert owner.pid != server
    os.kill(server, signal.SIGKILL)
    [status] = terminal(backend, [external_id])
    assert status.state is BackendState.COMPLETED
    assert (tmp_path / "job" / "logs" / "output.log").read_text() == "done\n"
    assert pid_gone(owner.pid)


def test_the_task_sees_the_environment_of_its_submission(
    backend: LocalBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal(backend, [backend.submit(make_task(tmp_path / "a", "true"), HostRuntime())])
    monkeypatch.setenv("GB_FORKSERVER_PROBE", "set after the server started")
    task = make_task(tmp_path / "b", 'echo "$GB_FORKSERVER_PROBE"', job_id=2)
    [status] = terminal(backend, [backend.submit(task, HostRuntime())])
    assert status.state is BackendState.COMPLETED
    assert (tmp_path / "b" / "logs" / "output.log").read_text() == "set after the server started\n"


def test_next_task_starts_while_the_previous_container_is_removed(
    backend: LocalBackend, tmp_path: Path
) -> None:
    runtime = SlowRemoveRuntime()
    first = backend.submit(make_task(tmp_path / "a", "true"), runtime)
    second = backend.submit(
        make_task(tmp_path / "b", "echo ran > ../second-ran", job_id=2), runtime
    )
    wait_file(tmp_path / "second-ran")
    assert not (tmp_path / "a" / "removed").exists()  # the first one's removal still runs
    assert backend.status([first])[0].state is BackendState.RUNNING
    statuses = terminal(backend, [first, second])
    assert [s.state for s in statuses] == [BackendState.COMPLETED] * 2
    assert (tmp_path / "a" / "removed").exists()  # the exit record comes after the removal


def test_socket_folder_is_private(backend: LocalBackend, tmp_path: Path) -> None:
    terminal(backend, [backend.submit(make_task(tmp_path / "job", "true"), HostRuntime())])
    mode = os.stat(os.path.dirname(this_server().socket_path)).st_mode
    assert stat.S_IMODE(mode) == 0o700


CLIENT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from backends.local import forkserver
    conn = forkserver.launch(Path(sys.argv[1]))
    [server] = forkserver._servers.values()
    print(json.dumps({"server": server.proc.pid, "folder": server.socket_path}), flush=True)
    time.sleep(600)
    """
)


def test_server_leaves_once_its_client_and_children_are_gone(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "logs").mkdir()
    make_task(job_dir, "sleep 1").write(job_dir / jobfiles.TASK_FILE)
    record = jobfiles.runtime_record(HostRuntime(), {})
    (job_dir / jobfiles.RUNTIME_FILE).write_text(json.dumps(record))
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(job_dir)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert client.stdout is not None
    info = json.loads(client.stdout.readline())
    client.kill()
    client.wait()
    wait_file(job_dir / jobfiles.EXIT_FILE)
    end = time.monotonic() + 10
    while not pid_gone(info["server"]):
        assert time.monotonic() < end, "the fork server outlived its client"
        time.sleep(0.05)
    assert not Path(info["folder"]).parent.exists()
    outcome = jobfiles.read_exit(job_dir)
    assert outcome is not None and outcome.state is BackendState.COMPLETED
