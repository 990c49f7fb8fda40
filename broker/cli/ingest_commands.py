"""``gearbroker ingest``: DICOM and folder ingests from local folders and S3, resumable."""

from __future__ import annotations

import csv
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml

from broker.cli.context import state
from catalog.errors import ConfigError, InvalidInputError
from ingest import report, runs
from ingest.deid import load_profile
from ingest.options import IngestOptions
from ingest.progress import Throttle, follow, progress_line
from ingest.sources import globs
from ingest.templates import load_template

ingest = click.Group("ingest", help="Ingest DICOM archives or folders into a project.")


def _common(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("src"),
        click.argument("group"),
        click.argument("project"),
        click.option("--subject", help="Put every file in this subject."),
        click.option("--session", help="Put every file in this session."),
        click.option("--include", multiple=True, help="Only keys matching this glob (repeatable)."),
        click.option("--exclude", multiple=True, help="Skip keys matching this glob (repeatable)."),
        click.option("--dry-run", is_flag=True, help="Scan and print the plan; write nothing."),
        click.option("--skip-existing", is_flag=True, help="Skip files already ingested/present."),
        click.option("--detect-duplicates", is_flag=True, help="Skip content already in project."),
        click.option("--de-identify", "deid", type=click.Path(dir_okay=False), help="Profile."),
        click.option("--verify", is_flag=True, help="Re-read stored files: fail if PHI survives."),
        click.option("--cluster", help="local, threads, slurm or tcp://scheduler:8786."),
        click.option("--workers", type=int, help="Dask workers (default: one per core)."),
        click.option("--shard-files", type=int, help="Files per shard."),
        click.option("--shard-bytes", type=int, help="Bytes per shard (at most)."),
        click.option("--batch-files", type=int, default=2000, help="Files per catalog commit."),
        click.option(
            "--endpoint-url",
            help="Another server of the bucket's API: S3-compatible, GCS JSON API, or the "
            "Azure account URL.",
        ),
        click.option("--aws-profile", help="AWS profile for an s3:// source."),
        click.option("--report-json", type=click.Path(dir_okay=False), help="Write the report."),
        click.option("--report-csv", type=click.Path(dir_okay=False), help="Write the problems."),
        click.option("--no-progress", is_flag=True, help="No live progress line."),
        click.option(
            "-C", "--ingest-config", type=click.Path(exists=True, dir_okay=False),
            help="YAML file of these options (flags given on the command line win).",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@ingest.command("dicom")
@_common
@click.option("--subject-map", type=click.Path(exists=True, dir_okay=False), help="CSV/YAML.")
@click.option("--no-pack", is_flag=True, help="Keep slices as single files (no series zips).")
@click.option("--strict-uid", is_flag=True, help="Reject files with UID hazards.")
@click.pass_context
def dicom_command(ctx: click.Context, /, **params: Any) -> None:
    """Ingest DICOM from SRC (folder or s3://bucket/prefix) into GROUP/PROJECT, with the
    hierarchy taken from the headers."""
    params = _with_config(ctx, params)
    subject_map = _subject_map(params["subject_map"]) if params["subject_map"] else {}
    _start(params, kind="dicom", pack=not params["no_pack"], strict_uid=params["strict_uid"],
           subject_map=subject_map)  # fmt: skip


@ingest.command("folder")
@_common
@click.option("--template", help="Required, e.g. '{subject}/{session}/{acquisition}/*'.")
@click.pass_context
def folder_command(ctx: click.Context, /, **params: Any) -> None:
    """Ingest the files of SRC into GROUP/PROJECT, with the hierarchy taken from paths."""
    params = _with_config(ctx, params)
    if not params["template"]:
        raise InvalidInputError("a folder ingest needs --template (or template: in -C)")
    _start(params, kind="folder", template=load_template(params["template"]).text)


def _with_config(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """Fill options not given on the command line from the ``-C`` YAML file."""
    if not params.get("ingest_config"):
        return params
    try:
        data = yaml.safe_load(Path(params["ingest_config"]).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {params['ingest_config']}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{params['ingest_config']}: expected a mapping of options")
    by_name = {p.name: p for p in ctx.command.params if p.name}
    aliases = {"de_identify": "deid"}
    out = dict(params)
    for raw, value in data.items():
        name = aliases.get(str(raw).replace("-", "_"), str(raw).replace("-", "_"))
        param = by_name.get(name)
        if param is None or isinstance(param, click.Argument):
            raise ConfigError(f"{params['ingest_config']}: unknown option {raw!r}")
        if ctx.get_parameter_source(name) == click.core.ParameterSource.DEFAULT:
            if param.multiple and isinstance(value, str):
                value = [value]
            out[name] = param.type_cast_value(ctx, value)
    return out


def _subject_map(path: str) -> dict[str, str]:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise InvalidInputError(f"{path}: expected PatientID: label pairs")
        return {str(k): str(v) for k, v in data.items()}
    rows = [row for row in csv.reader(text.splitlines()) if row and not row[0].startswith("#")]
    if any(len(row) < 2 for row in rows):
        raise InvalidInputError(f"{path}: expected PatientID,label rows")
    return {row[0].strip(): row[1].strip() for row in rows}


def _start(params: dict[str, Any], **extra: Any) -> None:
    st = state()
    settings = st.settings
    profile = load_profile(Path(params["deid"])) if params["deid"] else None  # validates it
    options = IngestOptions(
        source=params["src"],
        group=params["group"],
        project=params["project"],
        subject=params["subject"],
        session=params["session"],
        include=globs(params["include"]),
        exclude=globs(params["exclude"]),
        skip_existing=params["skip_existing"],
        detect_duplicates=params["detect_duplicates"],
        deid_profile=yaml.safe_load(Path(params["deid"]).read_text()) if profile else None,
        deid_name=profile.name if profile else None,
        verify=params["verify"],
        dry_run=params["dry_run"],
        shard_files=params["shard_files"] or settings.get("ingest.shard_files"),
        shard_bytes=params["shard_bytes"] or settings.get("ingest.shard_bytes"),
        batch_files=params["batch_files"],
        endpoint_url=params["endpoint_url"],
        aws_profile=params["aws_profile"],
        **extra,
    )
    from ingest.start import run_ingest, start_ingest  # imports Dask: only when needed

    run_id = start_ingest(st.catalog, options)
    click.echo(f"ingest {run_id} started (resume: gearbroker ingest resume {run_id})", err=True)
    _drive(params, lambda **kw: run_ingest(st.catalog, run_id, **kw))
    _finish(run_id, params)


def _drive(params: dict[str, Any], call: Callable[..., runs.RunInfo]) -> runs.RunInfo:
    st = state()
    settings = st.settings
    interactive = sys.stderr.isatty()
    show = functools.partial(_show, interactive)
    on_progress = None if params.get("no_progress") else Throttle(show, 0.25 if interactive else 5)
    try:
        return call(
            store_url=settings.store_url,
            store_options=st.store_options(),
            cluster=params.get("cluster") or settings.get("ingest.cluster"),
            workers=params.get("workers") or settings.get("ingest.workers") or os.cpu_count() or 1,
            slurm_section=settings.section("backends.slurm"),
            on_progress=on_progress,
        )
    finally:
        if interactive and on_progress is not None:
            click.echo("", err=True)


def _show(interactive: bool, line: str) -> None:
    if interactive:
        click.echo("\r" + line.ljust(110), nl=False, err=True)
    else:
        click.echo(line, err=True)


def _finish(run_id: int, params: dict[str, Any]) -> None:
    db = state().catalog.db
    summary = report.summary(db, run_id)
    out = sys.stdout
    if summary["state"] == runs.PLANNED:
        report.write_plan(db, run_id, out)
    report.write_text(summary, out, db)
    if params.get("report_json"):
        with open(params["report_json"], "w") as fh:
            report.write_json(summary, fh, db)
    if params.get("report_csv"):
        with open(params["report_csv"], "w", newline="") as fh:
            report.write_csv(db, run_id, fh)


@ingest.command("resume")
@click.argument("run_id", type=int)
@click.option("--cluster", help="local, threads, slurm or tcp://scheduler:8786.")
@click.option("--workers", type=int, help="Dask workers (default: one per core).")
@click.option("--no-progress", is_flag=True, help="No live progress line.")
@click.option("--report-json", type=click.Path(dir_okay=False), help="Write the report.")
@click.option("--report-csv", type=click.Path(dir_okay=False), help="Write the problems.")
def resume_command(run_id: int, **params: Any) -> None:
    """Continue a killed or interrupted ingest where it stopped."""
    from ingest.start import resume_ingest  # imports Dask: only when needed

    cat = state().catalog
    _drive(params, lambda **kw: resume_ingest(cat, run_id, **kw))
    _finish(run_id, params)


@ingest.command("follow")
@click.argument("run_id", type=int)
def follow_command(run_id: int) -> None:
    """Show the progress of a running ingest (from any shell) until it ends."""
    interactive = sys.stderr.isatty()
    run = follow(state().catalog.db, run_id, functools.partial(_show, interactive))
    if interactive:
        click.echo("", err=True)
    if run.state == runs.RUNNING:
        raise click.ClickException(
            f"the driver of ingest {run_id} is gone: gearbroker ingest resume {run_id}"
        )
    click.echo(f"ingest {run_id}: {run.state}")


@ingest.command("report")
@click.argument("run_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text")
@click.option("--plan", is_flag=True, help="The dry-run plan (targets, files, conflicts).")
@click.option("--deid-log", is_flag=True, help="What de-identification changed, per file.")
def report_command(run_id: int, fmt: str, plan: bool, deid_log: bool) -> None:
    """The report of an ingest: stage times, counts by status, every problem."""
    db = state().catalog.db
    out = sys.stdout
    if plan:
        report.write_plan(db, run_id, out)
    elif deid_log:
        for key, changes in report.deid_log(db, run_id):
            click.echo(f"{key}: {'; '.join(changes)}")
    elif fmt == "json":
        report.write_json(report.summary(db, run_id), out, db)
    elif fmt == "csv":
        report.write_csv(db, run_id, out)
    else:
        report.write_text(report.summary(db, run_id), out, db)


@ingest.command("list")
@click.option("--limit", type=int, default=20, show_default=True)
def list_command(limit: int) -> None:
    """Recent ingests with their state and progress."""
    for run in runs.list_runs(state().catalog.db, limit):
        click.echo(f"{run.id:>5}  {run.state:11} {run.kind:6} {run.source}")
        click.echo(f"       {progress_line(run.stats)}")
