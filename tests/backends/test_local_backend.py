"""The local Dask backend with a host-command runtime: outcomes, cancel, caps, survival."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.base import BackendState
from backends.errors import BackendError
from backends.local import jobfiles
from backends.local.backend import LocalBackend
from backends.local.supervisor import supervise
from broker.task import ContainerSpec, Resources, TaskSpec
from tests.backends.hostruntime import HostRuntime
from tests.backends.local_helpers import pid_gone, terminal, wait_file, wait_for

REPO = Path(__file__).resolve().parents[2]
RUNTIME = HostRuntime()


@pytest.fixture(scope="module", autouse=True)
def _importable_tests() -> Iterator[None]:
    """Supervisors are separate processes: they must import tests.backends.hostruntime."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(REPO))
        yield


@pytest.fixture(scope="module")
def backend() -> Iterator[LocalBackend]:
    local = LocalBackend()
    yield local
    local.close()


def make_task(
    job_dir: Path,
    script: str,
    *,
    job_id: int = 1,
    walltime_s: int | None = None,
    log_limit_bytes: int = 1024 * 1024,
    cpus: float = 1.0,
) -> TaskSpec:
    return TaskSpec(
        job_id=job_id,
        attempt=1,
        job_dir=str(job_dir),
        container=ContainerSpec(
            name=f"t{job_id}",
            image="host",
            argv=["sh", "-c", script],
            resources=Resources(cpus=cpus, walltime_s=walltime_s),
        ),
        log_limit_bytes=log_limit_bytes,
    )


def test_completed_task_keeps_its_output(backend: LocalBackend, tmp_path: Path) -> None:
    task = make_task(tmp_path / "job", "echo out; echo err >&2")
    external_id = backend.submit(task, RUNTIME)
    assert external_id == str(tmp_path / "job")
    [status] = terminal(backend, [external_id])
    assert status.state is BackendState.COMPLETED
    assert status.exit_code == 0
    assert status.started is not None and status.finished is not None
    assert status.started <= status.finished
    [log] = backend.log_paths(external_id, task)
    assert sorted(Path(log).read_text().split()) == ["err", "out"]
    record = json.loads((tmp_path / "job" / "exit.json").read_text())
    assert record["log_bytes"] == 8
    assert record["log_truncated"] is False


def test_failed_task_keeps_exit_code_and_error(backend: LocalBackend, tmp_path: Path) -> None:
    external_id = backend.submit(make_task(tmp_path / "job", "echo broken >&2; exit 3"), RUNTIME)
    [status] = terminal(backend, [external_id])
    assert status.state is BackendState.FAILED
    assert status.exit_code == 3
    assert status.message is not None and "broken" in status.message


def test_missing_program_fails_with_the_reason(backend: LocalBackend, tmp_path: Path) -> None:
    task = make_task(tmp_path / "job", "unused")
    task = TaskSpec(
        job_id=1,
        attempt=1,
        job_dir=task.job_dir,
        container=ContainerSpec(name="t", image="host", argv=["/nonexistent/runtime"]),
    )
    [status] = terminal(backend, [backend.submit(task, RUNTIME)])
    assert status.state is BackendState.FAILED
    assert status.message is not None and "/nonexistent/runtime" in status.message


def test_walltime_exceeded_is_timeout(backend: LocalBackend, tmp_path: Path) -> None:
    script = "echo $$ > pid; exec sleep 60"
    external_id = backend.submit(make_task(tmp_path / "job", script, walltime_s=1), RUNTIME)
    pid = int(wait_file(tmp_path / "job" / "pid"))
    [status] = terminal(backend, [external_id], timeout=20)
    assert status.state is BackendState.TIMEOUT
    assert status.message == "walltime of 1 s exceeded"
    assert pid_gone(pid)


def test_cancel_running_task_stops_its_processes(backend: LocalBackend, tmp_path: Path) -> None:
    script = "sleep 60 & echo $! > pid; wait"
    external_id = backend.submit(make_task(tmp_path / "job", script), RUNTIME)
    pid = int(wait_file(tmp_path / "job" / "pid"))
    [running] = backend.status([external_id])
    assert running.state is BackendState.RUNNING
    assert backend.cancel([external_id]) == [True]
    [status] = terminal(backend, [external_id], timeout=20)
    assert status.state is BackendState.CANCELLED
    assert pid_gone(pid)
    assert backend.cancel([external_id]) == [False]


def test_cancel_pending_task_never_runs_it(tmp_path: Path) -> None:
    backend = LocalBackend(max_concurrent=1)
    try:
        first = backend.submit(
            make_task(tmp_path / "a", "echo x > ran; sleep 60", job_id=1), RUNTIME
        )
        second = backend.submit(make_task(tmp_path / "b", "touch ran", job_id=2), RUNTIME)
        wait_file(tmp_path / "a" / "ran")
        assert [s.state for s in backend.status([first, second])] == [
            BackendState.RUNNING,
            BackendState.PENDING,
        ]
        assert backend.cancel([second]) == [True]
        [status] = backend.status([second])
        assert status.state is BackendState.CANCELLED
        assert backend.cancel([first]) == [True]
        terminal(backend, [first, second])
        time.sleep(0.3)
        assert not (tmp_path / "b" / "ran").exists()
        assert (tmp_path / "a" / "ran").exists()
    finally:
        backend.close()


def test_huge_log_is_capped_and_task_completes(backend: LocalBackend, tmp_path: Path) -> None:
    limit = 1024 * 1024
    script = "yes | head -c 2147483648"
    task = make_task(tmp_path / "job", script, log_limit_bytes=limit)
    [status] = terminal(backend, [backend.submit(task, RUNTIME)], timeout=120)
    assert status.state is BackendState.COMPLETED
    record = json.loads((tmp_path / "job" / "exit.json").read_text())
    assert record["log_bytes"] == 2147483648
    assert record["log_truncated"] is True
    log = (tmp_path / "job" / "logs" / "output.log").read_bytes()
    dropped = 2147483648 - limit
    marker = f"\n[... {dropped} bytes of log dropped ...]\n".encode()
    assert log == b"y\n" * (limit // 4) + marker + b"y\n" * (limit // 4)
    assert sorted(p.name for p in (tmp_path / "job" / "logs").iterdir()) == [
        "output.log",
        "supervisor.log",
    ]


SUBMITTER = textwrap.dedent(
    """
    import sys, time
    from backends.local.backend import LocalBackend
    from broker.task import ContainerSpec, TaskSpec
    from tests.backends.hostruntime import HostRuntime

    job_dir, script = sys.argv[1], sys.argv[2]
    task = TaskSpec(job_id=7, attempt=1, job_dir=job_dir,
                    container=ContainerSpec(name="t", image="host", argv=["sh", "-c", script]))
    print(LocalBackend().submit(task, HostRuntime()), flush=True)
    time.sleep(600)
    """
)


def test_task_survives_the_death_of_its_submitter(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    script = "echo ran >> ../count; sleep 2"
    submitter = subprocess.Popen(
        [sys.executable, "-c", SUBMITTER, str(job_dir), script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert submitter.stdout is not None
    external_id = submitter.stdout.readline().strip()
    wait_file(tmp_path / "count")
    submitter.kill()
    submitter.wait()
    fresh = LocalBackend()
    try:
        [status] = fresh.status([external_id])
        assert status.state is BackendState.RUNNING
        [status] = terminal(fresh, [external_id])
        assert status.state is BackendState.COMPLETED
    finally:
        fresh.close()
    assert (tmp_path / "count").read_text() == "ran\n"


def test_supervisor_runs_a_task_once(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    make_task(job_dir, "echo ran >> ../count; sleep 0.5").write(job_dir / "task.json")
    record = jobfiles.runtime_record(RUNTIME, {})
    (job_dir / "runtime.json").write_text(json.dumps(record))
    argv = [sys.executable, "-m", "backends.local.supervisor", str(job_dir)]
    first, second = (subprocess.Popen(argv, cwd=REPO) for _ in range(2))
    assert first.wait(timeout=30) == 0
    assert second.wait(timeout=30) == 0
    assert jobfiles.read_exit(job_dir) is not None
    assert supervise(job_dir) is None
    assert (tmp_path / "count").read_text() == "ran\n"


def test_unknown_id_is_missing(backend: LocalBackend, tmp_path: Path) -> None:
    [status] = backend.status([str(tmp_path / "never-submitted")])
    assert status.state is BackendState.MISSING
    assert status.message == jobfiles.LOST_MESSAGE
    assert backend.cancel([str(tmp_path / "never-submitted")]) == [False]


def test_dead_supervisor_without_exit_record_is_missing(
    backend: LocalBackend, tmp_path: Path
) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    owner = {"pid": 2**22 + 1, "host": socket.gethostname(), "started": "2020-01-01T00:00:00"}
    (job_dir / "supervisor.pid").write_text(json.dumps(owner))
    [status] = backend.status([str(job_dir)])
    assert status.state is BackendState.MISSING
    assert status.message is not None and status.message.endswith(jobfiles.LOST_MESSAGE)


def test_task_larger_than_the_machine_is_refused(backend: LocalBackend, tmp_path: Path) -> None:
    cpus = float((os.cpu_count() or 1) + 1)
    with pytest.raises(BackendError, match="cpus"):
        backend.submit(make_task(tmp_path / "job", "true", cpus=cpus), RUNTIME)


def test_resubmitting_a_used_job_dir_is_refused(backend: LocalBackend, tmp_path: Path) -> None:
    task = make_task(tmp_path / "job", "true")
    terminal(backend, [backend.submit(task, RUNTIME)])
    with pytest.raises(BackendError, match="already holds"):
        backend.submit(task, RUNTIME)


def test_render_shows_command_and_resources(backend: LocalBackend, tmp_path: Path) -> None:
    text = backend.render(make_task(tmp_path / "job", "echo 'a b'", walltime_s=5), RUNTIME)
    assert "command: sh -c 'echo '\"'\"'a b'\"'\"''" in text
    assert "walltime_s=5" in text
    assert str(tmp_path / "job") in text
    assert not (tmp_path / "job").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `dask scheduler` and two single-thread `dask worker` processes."""
    port = str(free_port())
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    common = {
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "cwd": tmp_path_factory.mktemp("dask"),
    }
    procs = [
        subprocess.Popen(
            [*dask, "--host", "127.0.0.1", "--port", port, "--dashboard-address", ":0"],
            **common,  # type: ignore[call-overload]
        )
    ]
    worker = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1"]
    for _ in range(2):
        procs.append(
            subprocess.Popen(
                [
                    *worker,
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--no-nanny",
                    "--resources",
                    "cpus=1",
                ],
                **common,  # type: ignore[call-overload]
            )
        )
    try:
        yield address
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)


def test_external_scheduler_runs_tasks(dask_cluster: str, tmp_path: Path) -> None:
    backend = LocalBackend(scheduler_address=dask_cluster)
    try:
        tasks = [
            make_task(tmp_path / f"j{i}", f"echo {i}; exit {i % 2}", job_id=i) for i in range(4)
        ]
        ids = [backend.submit(task, RUNTIME) for task in tasks]
        statuses = terminal(backend, ids, timeout=60)
        assert [s.exit_code for s in statuses] == [0, 1, 0, 1]
        assert [s.state for s in statuses] == [BackendState.COMPLETED, BackendState.FAILED] * 2
        assert (tmp_path / "j2" / "logs" / "output.log").read_text() == "2\n"
    finally:
        backend.close()


def test_external_scheduler_keeps_tasks_of_a_closed_client(
    dask_cluster: str, tmp_path: Path
) -> None:
    first = LocalBackend(scheduler_address=dask_cluster)
    tasks = [make_task(tmp_path / f"s{i}", "sleep 2", job_id=10 + i) for i in range(3)]
    try:
        ids = [first.submit(task, RUNTIME) for task in tasks]
        end = time.monotonic() + 60
        while sorted(s.state for s in first.status(ids)) != [
            BackendState.PENDING,
            BackendState.RUNNING,
            BackendState.RUNNING,
        ]:
            assert time.monotonic() < end, first.status(ids)
            time.sleep(0.05)
    finally:
        first.close()
    second = LocalBackend(scheduler_address=dask_cluster)
    try:
        assert sorted(s.state for s in second.status(ids)) == [
            BackendState.PENDING,
            BackendState.RUNNING,
            BackendState.RUNNING,
        ]
        assert {s.state for s in terminal(second, ids)} == {BackendState.COMPLETED}
    finally:
        second.close()


def test_close_leaves_running_tasks_to_their_supervisors(tmp_path: Path) -> None:
    backend = LocalBackend()
    external_id = backend.submit(make_task(tmp_path / "job", "sleep 1.5; echo done"), RUNTIME)
    wait_for(backend, [external_id], {BackendState.RUNNING})
    started = time.monotonic()
    backend.close()
    assert time.monotonic() - started < 1.0
    fresh = LocalBackend()
    try:
        [status] = terminal(fresh, [external_id])
    finally:
        fresh.close()
    assert status.state is BackendState.COMPLETED
    assert (tmp_path / "job" / "logs" / "output.log").read_text() == "done\n"


def test_supervisor_that_cannot_start_fails_with_its_error(
    backend: LocalBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobfiles, "SUPERVISOR_MODULE", "backends.local.no_such_module")
    [status] = terminal(backend, [backend.submit(make_task(tmp_path / "job", "true"), RUNTIME)])
    assert status.state is BackendState.FAILED
    assert status.message is not None
    assert "supervisor did not start" in status.message
    assert "No module named backends.local.no_such_module" in status.message
