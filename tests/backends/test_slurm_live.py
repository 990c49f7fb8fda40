"""The Slurm backend against the real single-node cluster, locally and through SSH."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.base import BackendState
from backends.slurm import SlurmBackend, SlurmSiteConfig
from broker.runtimes.base import ContainerRuntime
from broker.ssh import SSHTransport
from broker.task import Resources
from tests.backends.slurm_helpers import bwrap_runtime, make_task, wait_state, wait_terminal
from tests.fixtures.engines import SlurmCluster, SshLogin

pytestmark = pytest.mark.slurm
S = BackendState


def site_config(scratch: Path, ssh: SshLogin | None = None, **extra: object) -> SlurmSiteConfig:
    section: dict[str, object] = {
        "scratch_root": str(scratch),
        "status_min_interval_s": 0,
        "accounting": "auto",
        **extra,
    }
    if ssh is not None:
        section.update(
            ssh_host=ssh.host,
            ssh_port=ssh.port,
            ssh_user=ssh.user,
            ssh_key=str(ssh.key),
            ssh_known_hosts=str(ssh.known_hosts),
            ssh_agent=False,
        )
    return SlurmSiteConfig.from_mapping(section)


@pytest.fixture(params=["local", "ssh"])
def via(request: pytest.FixtureRequest, slurm_cluster: SlurmCluster) -> SshLogin | None:
    """None for the local transport, the SSH login for the SSH one."""
    if request.param == "ssh":
        login: SshLogin = request.getfixturevalue("ssh_login")
        return login
    return None


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def backend(via: SshLogin | None, scratch: Path) -> Iterator[SlurmBackend]:
    backend = SlurmBackend(site_config(scratch, via))
    yield backend
    backend.close()


@pytest.fixture
def runtime(bwrap_rootfs: Path) -> ContainerRuntime:
    return bwrap_runtime(bwrap_rootfs)


def read_log(task_dir: str) -> str:
    """The task's log so far ("" before slurmstepd has created it)."""
    path = Path(task_dir) / "logs" / "output.log"
    return path.read_text() if path.exists() else ""


def test_single_job_runs_end_to_end(
    backend: SlurmBackend, runtime: ContainerRuntime, scratch: Path
) -> None:
    task = make_task(scratch, 1, "echo hello from $PWD; echo result > output/result.txt")
    (job_id,) = [backend.submit(task, runtime)]
    assert job_id.isdigit()
    (status,) = wait_terminal(backend, [job_id])
    assert (status.state, status.exit_code, status.message) == (S.COMPLETED, 0, None)
    assert status.started is not None and status.finished is not None
    assert (Path(task.job_dir) / "v0/output/result.txt").read_text() == "result\n"
    assert read_log(task.job_dir) == "hello from /flywheel/v0\n"
    assert backend.log_paths(job_id, task) == [f"{task.job_dir}/logs/output.log"]


def test_fifty_task_array_is_one_submission(
    backend: SlurmBackend, runtime: ContainerRuntime, scratch: Path
) -> None:
    tasks = [
        make_task(scratch, 100 + i, f"echo task {i}; echo {i} > output/n.txt") for i in range(50)
    ]
    ids = backend.submit_many(tasks, runtime)
    array_id = ids[0].split("_")[0]
    assert ids == [f"{array_id}_{i}" for i in range(50)]
    statuses = wait_terminal(backend, ids, timeout=180)
    assert {s.state for s in statuses} == {S.COMPLETED}
    for i, task in enumerate(tasks):
        assert (Path(task.job_dir) / "v0/output/n.txt").read_text() == f"{i}\n"
        assert read_log(task.job_dir) == f"task {i}\n"


def test_failure_keeps_the_exit_code_and_the_log(
    backend: SlurmBackend, runtime: ContainerRuntime, scratch: Path
) -> None:
    tasks = [make_task(scratch, 1, "echo broken >&2; exit 3"), make_task(scratch, 2, "exit 0")]
    ids = backend.submit_many(tasks, runtime)
    failed, ok = wait_terminal(backend, ids)
    assert (failed.state, failed.exit_code, failed.message) == (S.FAILED, 3, "exited with status 3")
    assert ok.state is S.COMPLETED
    assert read_log(tasks[0].job_dir) == "broken\n"
    single = make_task(scratch, 3, "exit 7")
    (status,) = wait_terminal(backend, [backend.submit(single, runtime)])
    assert (status.state, status.exit_code) == (S.FAILED, 7)


def test_cancel_while_pending(
    via: SshLogin | None, scratch: Path, runtime: ContainerRuntime
) -> None:
    backend = SlurmBackend(site_config(scratch, via, sbatch_flags=["--hold"]))
    try:
        single = backend.submit(make_task(scratch, 1, "echo ran"), runtime)
        array = backend.submit_many(
            [make_task(scratch, 10 + i, "echo ran") for i in range(3)], runtime
        )
        statuses = backend.status([single, *array])
        assert {s.state for s in statuses} == {S.PENDING}
        assert statuses[0].message == "JobHeldUser"
        assert backend.cancel([single, array[1]]) == [True, True]
        one, first, second, third = backend.status([single, *array])
        assert (one.state, one.message) == (S.CANCELLED, "cancelled through gearbroker")
        assert second.state is S.CANCELLED  # a pending array task leaves no record of its own
        assert first.state is S.PENDING and third.state is S.PENDING
        assert backend.cancel([array[0].split("_")[0]]) == [True]  # the whole array
        statuses = wait_terminal(backend, array)
        assert {s.state for s in statuses} == {S.CANCELLED}
        assert not (scratch / "job-1/logs/output.log").exists()
    finally:
        backend.close()


def processes_mentioning(text: str) -> list[int]:
    """Pids of this machine's processes whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(
                errors="replace"
            ):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_cancel_while_running(
    backend: SlurmBackend, runtime: ContainerRuntime, scratch: Path
) -> None:
    task = make_task(scratch, 1, "echo started; sleep 60 && echo never")
    job_id = backend.submit(task, runtime)
    wait_state(backend, job_id, S.RUNNING)
    deadline = time.monotonic() + 20
    while "started" not in read_log(task.job_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(task.job_dir)  # the container runs
    assert backend.cancel([job_id]) == [True]
    (status,) = wait_terminal(backend, [job_id], timeout=60)
    assert (status.state, status.message) == (S.CANCELLED, "cancelled through gearbroker")
    assert status.exit_code is None
    deadline = time.monotonic() + 15
    while processes_mentioning(task.job_dir):  # Slurm stopped the container itself
        assert time.monotonic() < deadline, "the container outlived its cancelled job"
        time.sleep(0.2)
    log = read_log(task.job_dir)
    assert log.startswith("started\n") and "never" not in log
    assert "CANCELLED" in log  # slurmstepd's own note lands in the job log


@pytest.mark.slow
def test_time_limit_is_reported_as_timeout(
    slurm_cluster: SlurmCluster, ssh_login: SshLogin, runtime: ContainerRuntime, tmp_path: Path
) -> None:
    """One slow test for both transports: --time=1 minute is Slurm's smallest limit."""
    partition = "short" if "short" in slurm_cluster.partitions else None
    extra = {"partition": partition} if partition else {}
    backends = [
        SlurmBackend(site_config(tmp_path, None, **extra)),
        SlurmBackend(site_config(tmp_path, ssh_login, **extra)),
    ]
    limited = Resources(walltime_s=60)
    tasks = [make_task(tmp_path, i, "echo start; sleep 300", resources=limited) for i in (1, 2)]
    ids = [b.submit(t, runtime) for b, t in zip(backends, tasks, strict=True)]
    try:
        for backend, job_id in zip(backends, ids, strict=True):
            (status,) = wait_terminal(backend, [job_id], timeout=240, interval=2)
            assert status.state is S.TIMEOUT
            assert status.message == "exceeded its time limit (1 min)"
    finally:
        for backend in backends:
            backend.cancel(ids)
            backend.close()
    assert all("TIME LIMIT" in read_log(t.job_dir) for t in tasks)


def test_ssh_connection_dropped_mid_poll(
    ssh_login: SshLogin, slurm_cluster: SlurmCluster, scratch: Path, runtime: ContainerRuntime
) -> None:
    backend = SlurmBackend(site_config(scratch, ssh_login))
    transport = backend.transport
    assert isinstance(transport, SSHTransport)
    try:
        tasks = [make_task(scratch, i, f"sleep 2; echo {i}") for i in range(6)]
        ids = backend.submit_many(tasks, runtime)
        assert all(not s.state.terminal for s in backend.status(ids))
        client = transport._client
        assert client is not None
        ssh = client.get_transport()
        assert ssh is not None
        ssh.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        statuses = wait_terminal(backend, ids)
        assert {s.state for s in statuses} == {S.COMPLETED}
        assert transport.connects == 2
        assert [read_log(t.job_dir) for t in tasks] == [f"{i}\n" for i in range(6)]
    finally:
        backend.close()
