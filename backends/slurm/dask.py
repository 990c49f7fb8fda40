"""A ``dask_jobqueue.SLURMCluster`` built from the same ``[backends.slurm]`` site config.

Used by ``gearbroker cluster slurm --workers N`` and by ingest, so Dask work (ingest shards)
runs on Slurm allocations.  dask-jobqueue calls ``sbatch`` on the machine running the
scheduler, so this must run on a login node: a site reached only over SSH is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dask_jobqueue.slurm import SLURMCluster

from backends.slurm.config import SlurmSiteConfig
from backends.slurm.script import ARRAY_LOG_DIR
from catalog.errors import ConfigError


def cluster_options(site: SlurmSiteConfig) -> dict[str, Any]:
    """The SLURMCluster keyword arguments for ``site`` (inspectable without starting one)."""
    if site.ssh_host:
        raise ConfigError(
            "a Dask cluster on Slurm must be started on the login node (dask-jobqueue runs "
            f"sbatch locally), but backends.slurm.ssh_host is {site.ssh_host!r}"
        )
    extra = [f"--qos={site.qos}"] if site.qos else []
    return {
        "queue": site.partition,
        "account": site.account,
        "cores": site.dask_cores,
        "processes": site.dask_processes,
        "memory": site.dask_memory,
        "walltime": site.dask_walltime,
        "job_name": "gb-dask",
        "job_extra_directives": [*extra, *site.sbatch_flags],
        "job_script_prologue": list(site.setup),
        "log_directory": f"{site.scratch_root}/{ARRAY_LOG_DIR}",
        "shared_temp_directory": site.scratch_root,
    }


def slurm_cluster(
    section: Mapping[str, Any] | SlurmSiteConfig, workers: int, **overrides: Any
) -> SLURMCluster:
    """Start a SLURMCluster sized to ``workers`` Slurm jobs; ``overrides`` win over the site."""
    site = (
        section if isinstance(section, SlurmSiteConfig) else SlurmSiteConfig.from_mapping(section)
    )
    if workers < 0:
        raise ConfigError("the number of Dask workers must be >= 0")
    options = {**cluster_options(site), **overrides}
    cluster = SLURMCluster(**options)
    if workers:
        cluster.scale(jobs=workers)  # type: ignore[no-untyped-call]
    return cluster
