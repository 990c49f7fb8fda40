"""Gear runs through the broker on the scheduler backends: a real Slurm, and Kubernetes
(the official client against the test API server, whose pods are real Podman containers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from broker.batch import plan_batch, submit_batch
from broker.jobs import JobRequest
from broker.runtimes.podman import PodmanRuntime
from catalog.catalog import Catalog
from catalog.models import Job, JobState
from tests.backends.k8s_helpers import CLAIM, POD_UID
from tests.backends.k8s_s3_helpers import build_stager_image
from tests.broker.automation_helpers import drain
from tests.broker.conftest_broker import broker_settings, run_to_end
from tests.fixtures.engines import ContainerEngine
from tests.k8s_api import KubeTestServer


def _slurm_settings(tmp_path: Path, db_url: str, store_url: str, rootfs: Path) -> object:
    extra = (
        "[backends.slurm]\n"
        f'scratch_root = "{tmp_path}"\n'
        'runtime = "bwrap"\n'
        "status_min_interval_s = 0.5\n"
        "array_concurrency = 8\n"
    )
    return broker_settings(tmp_path, db_url, store_url, "bwrap", rootfs, extra=extra)


def test_gear_runs_on_slurm(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
    slurm_cluster: object,
) -> None:
    settings = _slurm_settings(tmp_path, db_url, store_url, bwrap_rootfs)
    job = run_to_end(
        catalog,
        settings,  # type: ignore[arg-type]
        JobRequest(
            install_test_gear(), {"infile": sample_file}, {"message": "on slurm"}, backend="slurm"
        ),
    )
    assert job.state == JobState.COMPLETE, job.reason_detail
    assert job.external_id and job.external_id.isdigit()
    assert job.provenance is not None and job.provenance["backend"]["name"] == "slurm"
    log = catalog.blobs.open(job.log_sha256).read().decode()  # type: ignore[arg-type]
    assert "message: on slurm" in log


def test_batch_becomes_a_slurm_array(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
    slurm_cluster: object,
) -> None:
    catalog.create_group("lab")
    catalog.create_project("lab", "study")
    for n in range(6):
        src = tmp_path / "src" / f"s{n}" / "e" / "a" / "t1.nii.gz"
        src.parent.mkdir(parents=True)
        src.write_text(str(n))
    catalog.upload([tmp_path / "src"], "lab/study")
    plan = plan_batch(catalog, "", "acquisition", {"infile": "*.nii.gz"})
    batch = submit_batch(catalog, install_test_gear(), plan, {}, backend="slurm")
    drain(catalog, _slurm_settings(tmp_path, db_url, store_url, bwrap_rootfs), 240)  # type: ignore[arg-type]
    with catalog.db.session(readonly=True) as session:
        jobs = list(session.scalars(select(Job).where(Job.batch_id == batch.id)))
    assert [j.state for j in jobs] == ["complete"] * 6
    arrays = {j.external_id.split("_")[0] for j in jobs if j.external_id}
    assert len(arrays) == 1  # one sbatch --array submission for the whole batch
    assert sorted(int(j.external_id.split("_")[1]) for j in jobs if j.external_id) == list(range(6))


@pytest.fixture
def k8s(podman_engine: ContainerEngine, tmp_path: Path) -> Iterator[tuple[KubeTestServer, Path]]:
    runtime = PodmanRuntime(
        binary=podman_engine.binary, env={"CONTAINERS_CONF": podman_engine.env["CONTAINERS_CONF"]}
    )
    server = KubeTestServer(runtime, {CLAIM: tmp_path}, tmp_path / ".server", slots=2).start()
    yield server, server.kubeconfig(tmp_path / "kubeconfig")
    server.stop()


def test_gear_runs_on_kubernetes(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    k8s: tuple[KubeTestServer, Path],
) -> None:
    _server, kubeconfig = k8s
    extra = (
        "[backends.kubernetes]\n"
        f'pvc_name = "{CLAIM}"\n'
        f'pvc_root = "{tmp_path}"\n'
        f'kubeconfig = "{kubeconfig}"\n'
        f"run_as_user = {POD_UID}\n"
        f"run_as_group = {POD_UID}\n"
    )
    settings = broker_settings(tmp_path, db_url, store_url, "podman", extra=extra)
    job = run_to_end(
        catalog,
        settings,
        JobRequest(
            install_test_gear(),
            {"infile": sample_file},
            {"message": "in a pod"},
            backend="kubernetes",
        ),
    )
    assert job.state == JobState.COMPLETE, job.reason_detail
    assert job.runtime == "native" and job.external_id and job.external_id.startswith("gb-job-")
    analysis = catalog.path_of(catalog.get(f"<id:{job.destination_id}>"))
    assert catalog.get(f"{analysis}/files/result.txt").tags == ["gb-test"]
    log = catalog.blobs.open(job.log_sha256).read().decode()  # type: ignore[arg-type]
    assert "message: in a pod" in log


def test_gear_runs_on_kubernetes_with_s3_staging(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    k8s: tuple[KubeTestServer, Path],
    podman_engine: ContainerEngine,
    s3_endpoint: str,
    s3_bucket: str,
    s3_client: Any,
) -> None:
    _server, kubeconfig = k8s
    extra = (
        "[backends.kubernetes]\n"
        'staging = "s3"\n'
        f's3_bucket = "{s3_bucket}"\n'
        f's3_endpoint_url = "{s3_endpoint}"\n'
        's3_region = "us-east-1"\n'
        f'stager_image = "{build_stager_image(podman_engine)}"\n'
        f'kubeconfig = "{kubeconfig}"\n'
        f"run_as_user = {POD_UID}\n"
        f"run_as_group = {POD_UID}\n"
    )
    settings = broker_settings(tmp_path, db_url, store_url, "podman", extra=extra)
    job = run_to_end(
        catalog,
        settings,
        JobRequest(
            install_test_gear(),
            {"infile": sample_file},
            {"message": "staged through s3"},
            backend="kubernetes",
        ),
    )
    assert job.state == JobState.COMPLETE, job.reason_detail
    assert job.external_id and job.external_id.startswith("gb-job-")
    analysis = catalog.path_of(catalog.get(f"<id:{job.destination_id}>"))
    assert catalog.get(f"{analysis}/files/result.txt").tags == ["gb-test"]
    log = catalog.blobs.open(job.log_sha256).read().decode()  # type: ignore[arg-type]
    assert "message: staged through s3" in log
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0  # cleaned up
