"""CLI commands for gear runs: run, jobs, broker serve, render, provenance."""

from __future__ import annotations

import json
import threading
import time

import click

from broker.cli.context import state
from broker.dispatch import DispatcherBusyError
from broker.jobs import (
    JobRequest,
    cancel_job,
    coerce_config,
    create_job,
    get_job,
    list_jobs,
    retry_job,
)
from broker.logs import follow_log, stored_log
from broker.provenance import provenance_chain
from broker.render import render_job, render_request
from broker.states import PRIORITIES, PRIORITY_NAMES
from broker.wiring import BACKENDS, make_dispatcher
from catalog.errors import GearbrokerError, InvalidInputError
from catalog.gears import get_gear
from catalog.models import Job, JobState
from gearspec.manifest import load_manifest


class JobFailedError(GearbrokerError):
    """``run --wait`` saw its job end in failure or cancellation."""


def pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    """``NAME=VALUE`` options as a dict; InvalidInputError naming ``what`` otherwise."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"{what}: expected NAME=VALUE, got {item!r}")
        out[key] = value
    return out


@click.command()
@click.argument("gear_ref", metavar="GEAR[:VERSION]")
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    metavar="NAME=PATH",
    help="A gear input and the catalog path of its file.",
)
@click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE")
@click.option("--destination", default=None, help="Container for outputs (default: the input's).")
@click.option("--backend", type=click.Choice(BACKENDS), default=None)
@click.option(
    "--runtime", type=click.Choice(["podman", "docker", "apptainer", "bwrap"]), default=None
)
@click.option(
    "--priority", type=click.Choice(list(PRIORITIES)), default="medium", show_default=True
)
@click.option(
    "--wait/--no-wait",
    default=False,
    help="Run until the job ends (embedded default: an in-process dispatcher).",
)
@click.option("--dry-run", is_flag=True, help="Validate and print what would be submitted.")
@click.option("--no-cache", is_flag=True, help="Run even if an identical result exists.")
@click.option(
    "--max-retries",
    type=click.IntRange(0, 20),
    default=None,
    help="Retries of transient failures (default: the gear's, then the config's).",
)
def run(
    gear_ref: str,
    inputs: tuple[str, ...],
    config: tuple[str, ...],
    destination: str | None,
    backend: str | None,
    runtime: str | None,
    priority: str,
    wait: bool,
    dry_run: bool,
    no_cache: bool,
    max_retries: int | None,
) -> None:
    """Run a gear on catalog files; prints the new job's id."""
    st = state()
    cat = st.catalog
    manifest = load_manifest(get_gear(cat, gear_ref).manifest)
    request = JobRequest(
        gear=gear_ref,
        inputs=pairs(inputs, "--input"),
        config=coerce_config(manifest, pairs(config, "--config")),
        destination=destination,
        backend=backend or st.settings.backend,
        runtime=runtime,
        priority=priority,
        options={
            **({"no_cache": True} if no_cache else {}),
            **({"max_retries": max_retries} if max_retries is not None else {}),
        },
    )
    if dry_run:
        click.echo(render_request(cat, st.settings, request))
        return
    job = create_job(cat, request)
    click.echo(f"job {job.id} pending")
    if wait:
        final = wait_for_job(job.id)
        click.echo(f"job {final.id} {final.state}" + (f" ({final.reason})" if final.reason else ""))
        if final.state != JobState.COMPLETE:
            raise JobFailedError(
                f"job {final.id} {final.state}: {final.reason_detail or final.reason}"
            )


def wait_for_job(job_id: int) -> Job:
    """Serve the job with an in-process dispatcher, or wait if one already serves the catalog."""
    st = state()
    dispatcher = make_dispatcher(st.catalog, st.settings)
    try:
        dispatcher.serve(only={job_id})
    except DispatcherBusyError:
        while not JobState(get_job(st.catalog, job_id).state).terminal:
            time.sleep(0.5)
    return get_job(st.catalog, job_id)


@click.group()
def jobs() -> None:
    """Gear jobs: list, show, logs, cancel, retry."""


@jobs.command("list")
@click.option("--state", "state_", type=click.Choice([s.value for s in JobState]), default=None)
@click.option("--gear", default=None)
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
def jobs_list(state_: str | None, gear: str | None, limit: int) -> None:
    """Recent jobs, newest first."""
    rows = list_jobs(state().catalog, state=state_, gear=gear, limit=limit)
    for job, g in rows:
        reason = f" ({job.reason})" if job.reason and job.state != JobState.COMPLETE else ""
        click.echo(
            f"{job.id:>6}  {job.state:9}{reason:16} {g.name}:{g.version:12} "
            f"{PRIORITY_NAMES.get(job.priority, job.priority)!s:8} {job.created_by:12} "
            f"{job.created:%Y-%m-%d %H:%M:%S}"
        )
    click.echo(f"{len(rows)} job(s)", err=True)


@jobs.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def jobs_show(job_id: int, as_json: bool) -> None:
    """A job's details, state history and provenance."""
    job = get_job(state().catalog, job_id)
    doc = {
        "id": job.id,
        "gear": f"{job.gear.name}:{job.gear.version}",
        "state": job.state,
        "reason": job.reason,
        "detail": job.reason_detail,
        "exit_code": job.exit_code,
        "attempt": job.attempt,
        "previous_job_id": job.previous_job_id,
        "backend": job.backend,
        "external_id": job.external_id,
        "runtime": job.runtime,
        "priority": PRIORITY_NAMES.get(job.priority, job.priority),
        "user": job.created_by,
        "config": job.config,
        "inputs": {k: v["path"] for k, v in job.inputs.items()},
        "history": [
            {
                "time": e.time.isoformat(),
                "from": e.from_state,
                "to": e.to_state,
                "reason": e.reason,
                **e.detail,
            }
            for e in job.events
        ],
        "provenance": job.provenance,
    }
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    for key in (
        "id",
        "gear",
        "state",
        "reason",
        "detail",
        "exit_code",
        "attempt",
        "backend",
        "external_id",
        "runtime",
        "priority",
        "user",
    ):
        if doc[key] is not None:
            click.echo(f"{key:12} {doc[key]}")
    click.echo(f"{'config':12} {json.dumps(job.config)}")
    for name, record in job.inputs.items():
        path = record["path"]
        click.echo(f"{'input':12} {name} = {path}")
    click.echo("history:")
    for e in job.events:
        why = f" ({e.reason})" if e.reason else ""
        click.echo(f"  {e.time:%Y-%m-%d %H:%M:%S}  {e.from_state or '-':9} -> {e.to_state}{why}")
    if job.provenance:
        for out in job.provenance.get("outputs", []):
            click.echo(f"{'output':12} {out['path']} ({out['size']} bytes)")


@jobs.command("logs")
@click.argument("job_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Keep printing while the job runs.")
def jobs_logs(job_id: int, follow: bool) -> None:
    """Print a job's container output (stored with the job once it has ended)."""
    st = state()
    job = get_job(st.catalog, job_id)
    if JobState(job.state).terminal and job.log_sha256:
        for chunk in stored_log(st.catalog, job):
            click.echo(chunk, nl=False)
        return
    for chunk in follow_log(st.catalog, st.settings, job_id, follow=follow):
        click.echo(chunk, nl=False)


@jobs.command("cancel")
@click.argument("job_id", type=int)
def jobs_cancel(job_id: int) -> None:
    """Cancel a job (a running container is really stopped)."""
    job = cancel_job(state().catalog, job_id)
    click.echo(
        f"job {job.id}: {job.state}"
        + (" (cancel requested)" if job.state != JobState.CANCELLED else "")
    )


@jobs.command("retry")
@click.argument("job_id", type=int)
def jobs_retry(job_id: int) -> None:
    """Run a failed or cancelled job again (a new job linked to the old one)."""
    job = retry_job(state().catalog, job_id)
    click.echo(f"job {job.id} pending (attempt {job.attempt}, retry of {job_id})")


@click.group("broker")
def broker_group() -> None:
    """The dispatcher."""


@broker_group.command("serve")
@click.option(
    "--backend",
    "backends",
    multiple=True,
    type=click.Choice(BACKENDS),
    help="Serve only these backends (default: all).",
)
def broker_serve(backends: tuple[str, ...]) -> None:
    """Claim, submit, monitor and finalize jobs until interrupted."""
    st = state()
    dispatcher = make_dispatcher(st.catalog, st.settings, backends or None)
    stop = threading.Event()
    click.echo(f"dispatcher {dispatcher.name} serving {', '.join(dispatcher.backend_names)}")
    try:
        dispatcher.serve(stop)
    except KeyboardInterrupt:
        stop.set()
        click.echo("stopped")


@click.command()
@click.argument("job_id", type=int)
def render(job_id: int) -> None:
    """Print what the backend runs for a job (script, manifest or command line)."""
    st = state()
    click.echo(render_job(st.catalog, st.settings, job_id))


@click.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True)
def provenance(path: str, as_json: bool) -> None:
    """The chain of jobs that produced a file."""
    chain = provenance_chain(state().catalog, path)
    if as_json:
        click.echo(json.dumps(chain, indent=2, default=str))
        return
    _print_chain(chain, "")


def _print_chain(node: dict[str, object], indent: str) -> None:
    click.echo(f"{indent}{node['path']}  (sha256 {str(node['sha256'])[:12]}, v{node['version']})")
    job = node.get("job")
    if isinstance(job, dict):
        click.echo(
            f"{indent}  made by job {job['id']}: {job['gear']} on {job['runtime']} "
            f"[{job['backend']}], {job['state']} at {job['finished']} by {job['user']}"
        )
        for parent in job.get("inputs", []):
            _print_chain(parent, indent + "    ")
    else:
        click.echo(f"{indent}  uploaded by {node['origin']}")


def register(cli: click.Group) -> None:
    for command in (run, jobs, broker_group, render, provenance):
        cli.add_command(command)
