"""The Kubernetes backend end to end: the official client against the test API server, whose
pods are real Podman containers (no real cluster can be installed on these machines)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.base import BackendState
from backends.kubernetes import KubernetesBackend, check_site
from backends.kubernetes.api import KubeApiError
from broker.runtimes.podman import PodmanRuntime
from broker.task import Resources
from tests.backends.k8s_helpers import CLAIM, log_text, make_task, site_config, wait_for
from tests.fixtures.engines import ContainerEngine
from tests.k8s_api import KubeTestServer

pytestmark = pytest.mark.podman
S = BackendState
RUNTIME = PodmanRuntime()  # what the broker would pass; the backend ignores it


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pvc")


@pytest.fixture(scope="module")
def server(podman_engine: ContainerEngine, root: Path) -> Iterator[KubeTestServer]:
    runtime = PodmanRuntime(
        binary=podman_engine.binary, env={"CONTAINERS_CONF": podman_engine.env["CONTAINERS_CONF"]}
    )
    api = KubeTestServer(runtime, {CLAIM: root}, root / ".server", slots=4).start()
    yield api
    api.stop()


@pytest.fixture
def kubeconfig(server: KubeTestServer, tmp_path: Path) -> Path:
    server.clear_faults()
    return server.kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def backend(root: Path, kubeconfig: Path) -> Iterator[KubernetesBackend]:
    k8s = KubernetesBackend(site_config(root, kubeconfig))
    yield k8s
    k8s.close()


def make_backend(root: Path, kubeconfig: Path, **extra: Any) -> KubernetesBackend:
    return KubernetesBackend(site_config(root, kubeconfig, **extra))


def running(statuses: list[Any]) -> bool:
    return all(s.state is S.RUNNING for s in statuses)


def test_runs_to_completion_with_outputs_log_and_env(
    backend: KubernetesBackend, root: Path
) -> None:
    task = make_task(
        root,
        'echo "value=$GREETING"; echo $(echo sub) > output/result.txt; cat config.json',
        env={"GREETING": "$(HOME) 5$"},
    )
    (name,) = [backend.submit(task, RUNTIME)]
    (status,) = wait_for(backend, [name])
    assert (status.state, status.exit_code, status.message) == (S.COMPLETED, 0, None)
    assert status.started is not None and status.finished is not None
    assert (Path(task.job_dir) / "v0/output/result.txt").read_text() == "sub\n"
    assert log_text(task) == 'value=$(HOME) 5$\n{"config": {}}'
    assert backend.log_paths(name, task) == [str(Path(task.job_dir) / "logs/output.log")]


def test_exit_code_and_oom_and_walltime(backend: KubernetesBackend, root: Path) -> None:
    tasks = [
        make_task(root, "echo failing; exit 3"),
        make_task(
            root, "head -c 200m /dev/zero | tail", resources=Resources(cpus=0.5, memory_mb=32)
        ),
        make_task(root, "sleep 60", resources=Resources(cpus=0.5, walltime_s=2)),
    ]
    ids = [backend.submit(t, RUNTIME) for t in tasks]
    failed, oom, late = wait_for(backend, ids)
    assert (failed.state, failed.exit_code, failed.message) == (S.FAILED, 3, "exited with status 3")
    assert log_text(tasks[0]) == "failing\n"
    assert oom.state is S.OUT_OF_MEMORY, oom
    assert late.state is S.TIMEOUT and "walltime" in (late.message or "")


def test_cancel_deletes_the_job_with_background_propagation(
    backend: KubernetesBackend, root: Path, server: KubeTestServer
) -> None:
    task = make_task(root, "echo started; sleep 60")
    name = backend.submit(task, RUNTIME)
    wait_for(backend, [name], running)
    start = time.monotonic()
    assert backend.cancel([name]) == [True]
    (status,) = wait_for(backend, [name])
    assert status.state is S.CANCELLED and status.message == "cancelled through gearbroker"
    assert (name, "Background") in server.cluster.deletions
    assert not [p for (_, p) in server.cluster.pods if p.startswith(name)]
    assert backend.cancel([name]) == [False]
    assert time.monotonic() - start < 20


def test_job_deleted_by_someone_else_is_cancelled_externally(
    backend: KubernetesBackend, root: Path, server: KubeTestServer
) -> None:
    name = backend.submit(make_task(root, "sleep 60"), RUNTIME)
    wait_for(backend, [name], running)
    server.delete_job("default", name)
    (status,) = wait_for(backend, [name])
    assert status.state is S.CANCELLED
    assert "deleted outside gearbroker" in (status.message or "")


def test_log_is_streamed_while_the_pod_runs(backend: KubernetesBackend, root: Path) -> None:
    task = make_task(root, "echo first; sleep 3; echo second")
    name = backend.submit(task, RUNTIME)
    log = Path(task.job_dir) / "logs/output.log"
    wait_for(backend, [name], lambda s: log.exists() and log.read_text() == "first\n", timeout=60)
    assert backend.status([name])[0].state is S.RUNNING
    (status,) = wait_for(backend, [name])
    assert status.state is S.COMPLETED
    assert log.read_text() == "first\nsecond\n"


def test_watch_dropped_mid_run_loses_no_event(
    backend: KubernetesBackend, root: Path, server: KubeTestServer
) -> None:
    wait_for(backend, [], timeout=10)  # the watch is up
    server.drop_watch_after(2)  # taken by the next watch request ...
    server.cut_watches()  # ... which this forces: the resumed stream then drops mid-run
    tasks = [make_task(root, f"echo {i}") for i in range(4)]
    ids = [backend.submit(t, RUNTIME) for t in tasks]
    lists_before = server.count("list", "jobs")
    statuses = wait_for(backend, ids)
    assert [s.state for s in statuses] == [S.COMPLETED] * 4
    assert [log_text(t) for t in tasks] == [f"{i}\n" for i in range(4)]
    watcher = backend.watcher
    assert watcher.reconnects >= 1 and watcher.relists == 1  # resumed, not relisted
    assert server.count("list", "jobs") == lists_before  # statuses came from the watch


def test_watch_relists_after_410_gone(
    backend: KubernetesBackend, root: Path, server: KubeTestServer
) -> None:
    wait_for(backend, [], timeout=10)
    ids = [backend.submit(make_task(root, "true"), RUNTIME) for _ in range(2)]
    server.cluster.compact()  # as if etcd compacted past the watch's resourceVersion
    server.cut_watches()
    assert [s.state for s in wait_for(backend, ids)] == [S.COMPLETED] * 2
    assert backend.watcher.relists == 2  # the ERROR 410 event: relisted
    server.fail_next(1, 410)  # the HTTP-level 410 answer to a watch request
    server.cut_watches()
    wait_for(backend, ids, lambda s: backend.watcher.relists == 3, timeout=10)


def test_server_errors_and_throttling_are_retried(
    root: Path, kubeconfig: Path, server: KubeTestServer
) -> None:
    backend = make_backend(root, kubeconfig, retries=4)
    try:
        wait_for(backend, [], timeout=10)
        server.fail_next(2, 500)
        name = backend.submit(make_task(root, "true"), RUNTIME)
        server.fail_next(2, 429, retry_after=0.2)
        (status,) = wait_for(backend, [name])
        assert status.state is S.COMPLETED
        server.fail_next(10, 500)
        with pytest.raises(KubeApiError, match="HTTP 500"):
            backend.submit(make_task(root, "true"), RUNTIME)
        assert server.count("create", "jobs") >= 5  # the first try and four retries
    finally:
        server.clear_faults()
        backend.close()


def test_unschedulable_pod_fails_after_the_pending_timeout(
    root: Path, kubeconfig: Path, server: KubeTestServer
) -> None:
    message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    server.cluster.unschedulable = lambda job: message
    backend = make_backend(root, kubeconfig, pending_timeout_s=1.5)
    try:
        task = make_task(root, "true", resources=Resources(cpus=0.5, gpus=1))
        name = backend.submit(task, RUNTIME)
        assert backend.status([name])[0].state is S.PENDING
        start = time.monotonic()
        (status,) = wait_for(backend, [name])
        assert time.monotonic() - start >= 1.0
        assert status.state is S.FAILED
        assert status.message == f"did not start within 1.5 s: unschedulable: {message}"
        assert message in log_text(task)
        assert (name, "Background") in server.cluster.deletions
    finally:
        backend.close()


def test_missing_image_reports_the_pull_error(root: Path, kubeconfig: Path) -> None:
    backend = make_backend(root, kubeconfig, pending_timeout_s=1.0)
    try:
        name = backend.submit(
            make_task(root, "true", image="localhost/gearbroker/absent:9"), RUNTIME
        )
        (status,) = wait_for(backend, [name])
        assert status.state is S.FAILED
        assert 'ImagePullBackOff: Back-off pulling image "localhost/gearbroker/absent:9"' in (
            status.message or ""
        )
    finally:
        backend.close()


def test_resubmission_adopts_and_find_locates_the_job(
    backend: KubernetesBackend, root: Path, server: KubeTestServer
) -> None:
    task = make_task(root, "sleep 1")
    name = backend.submit(task, RUNTIME)
    assert backend.submit(task, RUNTIME) == name  # 409 -> the same job folder's Job
    assert backend.find(task.job_dir, task.key) == name
    assert backend.find(task.job_dir + "-other", task.key) is None
    assert server.count("create", "jobs") >= 2
    assert wait_for(backend, [name])[0].state is S.COMPLETED


def test_a_new_backend_adopts_running_jobs_and_reports_vanished_ones(
    root: Path, kubeconfig: Path
) -> None:
    first = make_backend(root, kubeconfig)
    task = make_task(root, "sleep 2; echo late")
    name = first.submit(task, RUNTIME)
    first.close()
    second = make_backend(root, kubeconfig)
    try:
        (status,) = wait_for(second, [name])
        assert status.state is S.COMPLETED and log_text(task) == "late\n"
        (gone,) = second.status(["gb-job-999999-1-0123abcd"])
        assert gone.state is S.MISSING and "no Job gb-job-999999-1-0123abcd" in (gone.message or "")
    finally:
        second.close()


def test_ttl_cleanup_keeps_the_seen_outcome(root: Path, kubeconfig: Path) -> None:
    backend = make_backend(root, kubeconfig, ttl_seconds_after_finished=1)
    try:
        name = backend.submit(make_task(root, "exit 4"), RUNTIME)
        (status,) = wait_for(backend, [name])
        assert status.exit_code == 4
        time.sleep(1.5)
        assert backend.status([name]) == [status]
    finally:
        backend.close()


def test_about_two_requests_per_job_when_watching(
    backend: KubernetesBackend, root: Path, server: KubeTestServer
) -> None:
    wait_for(backend, [], timeout=10)
    before = sum(server.counts.values())
    ids = [backend.submit(make_task(root, "true"), RUNTIME) for _ in range(8)]
    wait_for(backend, ids, poll=0.05)
    per_job = (sum(server.counts.values()) - before) / len(ids)
    assert per_job <= 3.0, dict(server.counts)


def test_doctor_reports_each_check(
    root: Path, kubeconfig: Path, server: KubeTestServer, tmp_path: Path
) -> None:
    rows = check_site(site_config(root, kubeconfig))
    assert [(r.check, r.ok) for r in rows] == [
        ("credentials", True), ("API server", True), ("namespace", True),
        ("permissions", True), ("volume", True),
    ]  # fmt: skip
    assert "v1.30.0" in rows[1].message
    server.denied.add(("get", "pods", "log"))
    rows = check_site(site_config(root, kubeconfig, pvc_name="nope"))
    server.clear_faults()
    assert not rows[3].ok and "get pods/log" in rows[3].message
    assert not rows[4].ok and "nope does not exist" in rows[4].message
    dead_config = tmp_path / "dead"  # a kubeconfig naming a closed port
    dead_config.write_text(kubeconfig.read_text().replace(server.url, "http://127.0.0.1:9"))
    rows = check_site(site_config(root, dead_config, retries=0))
    assert rows[1].check == "API server" and not rows[1].ok
    assert [r.ok for r in rows[2:]] == [False, False, False]
    rows = check_site(site_config(root, tmp_path / "absent-kubeconfig"))
    assert rows[0].check == "credentials" and not rows[0].ok
    assert "absent-kubeconfig" in rows[0].message
