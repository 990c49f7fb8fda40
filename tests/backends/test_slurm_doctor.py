"""`doctor slurm` checks and the Dask SLURMCluster factory, against the real cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from dask.distributed import Client

from backends.slurm import SlurmSiteConfig, make_transport
from backends.slurm import dask as slurm_dask
from backends.slurm.doctor import check_site
from broker.runtimes.base import ContainerRuntime
from catalog.errors import ConfigError
from tests.backends.slurm_helpers import FakeRuntime, bwrap_runtime
from tests.backends.test_slurm_live import site_config
from tests.fixtures.engines import SlurmCluster, SshLogin

pytestmark = pytest.mark.slurm


def _run(site: SlurmSiteConfig, runtime: ContainerRuntime) -> dict[str, tuple[bool, str]]:
    transport = make_transport(site)
    try:
        return {
            c.check: (c.ok, c.message)
            for c in check_site(site, runtime, transport, job_timeout_s=60)
        }
    finally:
        transport.close()


@pytest.mark.parametrize("over_ssh", [False, True])
def test_doctor_passes_on_a_healthy_site(
    request: pytest.FixtureRequest,
    slurm_cluster: SlurmCluster,
    bwrap_rootfs: Path,
    tmp_path: Path,
    over_ssh: bool,
) -> None:
    login: SshLogin | None = request.getfixturevalue("ssh_login") if over_ssh else None
    site = site_config(tmp_path, login, partition=slurm_cluster.default_partition)
    results = _run(site, bwrap_runtime(bwrap_rootfs))
    assert list(results) == [
        "connection", "commands", "controller", "partitions", "shared folder", "compute node",
        "runtime",
    ]  # fmt: skip
    assert all(ok for ok, _ in results.values()), results
    assert results["runtime"][1].startswith("bwrap on ")
    assert "bubblewrap" in results["runtime"][1]
    assert not list((tmp_path / ".slurm").glob("doctor-*"))


def test_doctor_explains_what_is_wrong(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    site = site_config(tmp_path, partition="nosuchpartition")
    results = _run(site, FakeRuntime())
    assert not results["partitions"][0]
    assert "nosuchpartition does not exist" in results["partitions"][1]
    assert not results["compute node"][0]
    assert "sbatch of a tiny test job failed" in results["compute node"][1]

    results = _run(site_config(tmp_path), FakeRuntime())
    assert results["partitions"] == (
        True,
        f"no partition configured; default partition {slurm_cluster.default_partition}",
    )
    assert results["compute node"][0]
    assert not results["runtime"][0]
    assert "fakeruntime (fake) is not on the PATH" in results["runtime"][1]
    assert "backends.slurm.setup" in results["runtime"][1]

    missing_dir = site_config(tmp_path / "absent")
    results = _run(missing_dir, FakeRuntime())
    assert not results["shared folder"][0] and "does not exist" in results["shared folder"][1]
    assert results["compute node"] == (False, "not run: an earlier check failed")

    no_commands = site_config(tmp_path, bin_dir="/nonexistent/bin")
    results = _run(no_commands, FakeRuntime())
    assert not results["commands"][0]
    assert "sbatch, squeue, scancel, sinfo not found" in results["commands"][1]
    assert "bin_dir" in results["commands"][1]


def test_dask_cluster_runs_work_on_slurm(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    section = {
        "scratch_root": str(tmp_path),
        "partition": slurm_cluster.default_partition,
        "dask_memory": "1GB",
        "dask_walltime": "00:10:00",
        "setup": ["export GB_DASK_TEST=1"],
    }
    with slurm_dask.slurm_cluster(section, workers=1) as cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
        script = cluster.job_script()
        assert f"#SBATCH -p {slurm_cluster.default_partition}" in script
        assert "export GB_DASK_TEST=1" in script
        client.wait_for_workers(1, timeout=60)
        assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6


def test_dask_cluster_needs_the_login_node(tmp_path: Path) -> None:
    site = SlurmSiteConfig.from_mapping({"scratch_root": str(tmp_path), "ssh_host": "login1"})
    with pytest.raises(ConfigError, match="login node"):
        slurm_dask.cluster_options(site)
