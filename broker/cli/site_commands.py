"""Site commands for admins: ``doctor slurm|kubernetes`` and ``cluster slurm``."""

from __future__ import annotations

import time

import click

from broker.cli.context import state
from broker.wiring import runtime_options
from catalog.errors import GearbrokerError


class DoctorFailedError(GearbrokerError):
    """At least one doctor check failed."""


def _report(rows: list[tuple[str, bool, str]]) -> None:
    for check, ok, message in rows:
        click.echo(f"[{'ok' if ok else 'FAIL':4}] {check:24} {message}")
    failed = [check for check, ok, _ in rows if not ok]
    if failed:
        raise DoctorFailedError(f"{len(failed)} check(s) failed: {', '.join(failed)}")
    click.echo("all checks passed")


@click.group()
def doctor() -> None:
    """Check that a backend is wired correctly, in words an admin can act on."""


@doctor.command("slurm")
@click.option(
    "--timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds to wait for the test job on a compute node.",
)
def doctor_slurm(timeout: float) -> None:
    """Connection, Slurm commands, partitions, shared folder, a tiny job and its runtime."""
    from backends.slurm.backend import make_transport
    from backends.slurm.config import SlurmSiteConfig
    from backends.slurm.doctor import check_site
    from broker.runtimes import make_runtime

    settings = state().settings
    site = SlurmSiteConfig.from_mapping(settings.section("backends.slurm"))
    runtime = make_runtime(site.runtime, **runtime_options(settings, site.runtime))
    transport = make_transport(site)
    try:
        _report(
            [
                (c.check, c.ok, c.message)
                for c in check_site(site, runtime, transport, job_timeout_s=timeout)
            ]
        )
    finally:
        transport.close()


@doctor.command("kubernetes")
def doctor_kubernetes() -> None:
    """Credentials, API server, namespace, permissions on Jobs/pods/logs, and the volume."""
    from backends.kubernetes import KubernetesSiteConfig, check_site

    section = state().settings.section("backends.kubernetes")
    rows = check_site(KubernetesSiteConfig.from_mapping(section))
    _report([(c.check, c.ok, c.message) for c in rows])


@click.group()
def cluster() -> None:
    """Dask clusters on a scheduler's allocations."""


@cluster.command("slurm")
@click.option("--workers", type=click.IntRange(1), required=True, help="Slurm jobs to start.")
def cluster_slurm(workers: int) -> None:
    """Start a dask-jobqueue SLURMCluster from the site config; prints its address."""
    from backends.slurm.dask import slurm_cluster

    cl = slurm_cluster(state().settings.section("backends.slurm"), workers)
    click.echo(f"scheduler: {cl.scheduler_address}")
    click.echo(f"dashboard: {cl.dashboard_link}")
    click.echo("Ctrl-C stops the cluster and its Slurm jobs")
    try:
        while True:
            time.sleep(5)
    except KeyboardInterrupt:
        cl.close()


def register(cli: click.Group) -> None:
    cli.add_command(doctor)
    cli.add_command(cluster)
