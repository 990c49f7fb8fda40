"""CLI commands for automation: gear rules, batch runs, job priorities."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from broker import rules_admin
from broker.batch import batch_status, cancel_batch, plan_batch, submit_batch
from broker.cli.context import state
from broker.cli.job_commands import jobs, pairs
from broker.jobs import coerce_config, get_job
from broker.rules_admin import RuleSpec
from broker.states import PRIORITIES, PRIORITY_NAMES, lock_job
from broker.wiring import BACKENDS
from catalog import audit
from catalog.errors import ConflictError, InvalidInputError
from catalog.gears import get_gear
from catalog.models import JobState
from gearspec.manifest import load_manifest


@click.group()
def rule() -> None:
    """Gear rules: run a gear automatically when matching files arrive or change."""


@rule.command("add")
@click.argument("project", metavar="GROUP/PROJECT")
@click.argument("name")
@click.option("--gear", "gear_ref", required=True, help="GEAR (newest) or GEAR:VERSION (pinned)")
@click.option(
    "--trigger",
    type=click.Choice(["file-added", "file-metadata-changed"]),
    default="file-added",
    show_default=True,
)
@click.option("--match", "match_json", default=None, help="Match tree as JSON (see README).")
@click.option("--type", "types", multiple=True, help="File type (repeat for any of several).")
@click.option("--name-glob", default=None, help="File name glob, e.g. '*.dicom.zip'.")
@click.option("--tag", "tags", multiple=True, help="Required tag (repeatable).")
@click.option("--modality", default=None)
@click.option("--classification", "classes", multiple=True, metavar="KEY=VALUE")
@click.option("--level", default=None, help="Container level of the file.")
@click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE")
@click.option("--input", "input_name", default=None, help="Gear input fed the file.")
@click.option("--destination", default=None)
@click.option("--priority", type=click.Choice(list(PRIORITIES)), default="medium")
@click.option("--max-retries", type=click.IntRange(0, 20), default=None)
def rule_add(
    project: str,
    name: str,
    gear_ref: str,
    trigger: str,
    match_json: str | None,
    types: tuple[str, ...],
    name_glob: str | None,
    tags: tuple[str, ...],
    modality: str | None,
    classes: tuple[str, ...],
    level: str | None,
    config: tuple[str, ...],
    input_name: str | None,
    destination: str | None,
    priority: str,
    max_retries: int | None,
) -> None:
    """Add (or replace) a rule; the match comes from --match JSON or the shortcut flags."""
    cat = state().catalog
    if match_json:
        try:
            match = json.loads(match_json)
        except ValueError as exc:
            raise InvalidInputError(f"--match is not JSON: {exc}") from exc
    else:
        match = {}
        if types:
            match["type"] = list(types)
        if name_glob:
            match["name"] = {"glob": name_glob}
        if tags:
            match["tags"] = list(tags)
        if modality:
            match["modality"] = modality
        if classes:
            match["classification"] = pairs(classes, "--classification")
        if level:
            match["level"] = level
    manifest = load_manifest(get_gear(cat, gear_ref).manifest)
    options: dict[str, Any] = {"priority": priority}
    for key, value in (
        ("input", input_name),
        ("destination", destination),
        ("max_retries", max_retries),
    ):
        if value is not None:
            options[key] = value
    spec = RuleSpec(
        name=name,
        gear=gear_ref,
        match=match,
        trigger=trigger,
        config=coerce_config(manifest, pairs(config, "--config")),
        options=options,
    )
    saved = rules_admin.save_rule(cat, project, spec)
    click.echo(f"rule {saved.name!r} saved in {project} (id {saved.id})")


@rule.command("load")
@click.argument("project", metavar="GROUP/PROJECT")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def rule_load(project: str, path: Path) -> None:
    """Save every rule of a YAML file kept with the project (upsert by name)."""
    saved = rules_admin.load_rules(state().catalog, project, path)
    click.echo(f"{len(saved)} rule(s) saved: {', '.join(r.name for r in saved)}")


@rule.command("list")
@click.argument("project", metavar="GROUP/PROJECT")
def rule_list(project: str) -> None:
    for r in rules_admin.list_rules(state().catalog, project):
        gear = f"{r.gear_name}:{r.gear_version or 'latest'}"
        state_ = "enabled " if r.enabled else "disabled"
        click.echo(
            f"{r.id:>4}  {state_}  {r.name:24} {r.trigger:22} {gear:32} {json.dumps(r.match)}"
        )


@rule.command("show")
@click.argument("project", metavar="GROUP/PROJECT")
@click.argument("name")
def rule_show(project: str, name: str) -> None:
    """A rule, its recent jobs and the triggers it could not turn into jobs."""
    cat = state().catalog
    r = rules_admin.get_rule(cat, project, name)
    click.echo(
        json.dumps(
            {
                "id": r.id,
                "name": r.name,
                "enabled": r.enabled,
                "trigger": r.trigger,
                "gear": f"{r.gear_name}:{r.gear_version or 'latest'}",
                "match": r.match,
                "config": r.config,
                "options": r.options,
                "created_by": r.created_by,
            },
            indent=2,
        )
    )
    recent, errors = rules_admin.rule_activity(cat, r)
    for job in recent:
        click.echo(f"job {job.id:>6}  {job.state:9} file {job.trigger_file_id}")
    for event in errors:
        click.echo(
            f"error {event.time:%Y-%m-%d %H:%M:%S} file {event.detail.get('file_id')}: "
            f"{event.detail.get('error')}"
        )


@rule.command("disable")
@click.argument("project", metavar="GROUP/PROJECT")
@click.argument("name")
def rule_disable(project: str, name: str) -> None:
    rules_admin.set_enabled(state().catalog, project, name, False)
    click.echo(f"rule {name!r} disabled")


@rule.command("enable")
@click.argument("project", metavar="GROUP/PROJECT")
@click.argument("name")
def rule_enable(project: str, name: str) -> None:
    rules_admin.set_enabled(state().catalog, project, name, True)
    click.echo(f"rule {name!r} enabled")


@rule.command("rm")
@click.argument("project", metavar="GROUP/PROJECT")
@click.argument("name")
def rule_rm(project: str, name: str) -> None:
    rules_admin.remove_rule(state().catalog, project, name)
    click.echo(f"rule {name!r} removed")


@rule.command("preview")
@click.argument("project", metavar="GROUP/PROJECT")
@click.argument("name")
def rule_preview(project: str, name: str) -> None:
    """What the rule matches in the existing data, and whether it already fired there."""
    rows = rules_admin.preview(state().catalog, project, name)
    for path, _file_id, status in rows:
        click.echo(f"{status:10}  {path}")
    click.echo(f"{len(rows)} matching file(s)", err=True)


@rule.command("backfill")
@click.argument("project", metavar="GROUP/PROJECT")
@click.argument("name")
@click.option("--rerun", is_flag=True, help="Also run files the rule already fired on.")
def rule_backfill(project: str, name: str, rerun: bool) -> None:
    """Create the rule's jobs for the existing data."""
    created = rules_admin.backfill(state().catalog, project, name, rerun=rerun)
    click.echo(
        f"{len(created)} job(s) created" + (f": {created[0]}..{created[-1]}" if created else "")
    )


@click.group(invoke_without_command=True)
@click.argument("gear_ref", metavar="GEAR[:VERSION]", required=False)
@click.option("--query", default="", help="Search query choosing the containers.")
@click.option(
    "--level",
    type=click.Choice(["acquisition", "session", "subject", "project"]),
    default="acquisition",
    show_default=True,
)
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    metavar="NAME=PATTERN",
    help="Glob (or re:REGEX) choosing each container's file for a gear input.",
)
@click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE")
@click.option("--backend", type=click.Choice(BACKENDS), default=None)
@click.option("--priority", type=click.Choice(list(PRIORITIES)), default="medium")
@click.option("--max-retries", type=click.IntRange(0, 20), default=None)
@click.option("--no-cache", is_flag=True, help="Run even where an identical result exists.")
@click.option("-y", "--yes", is_flag=True, help="Submit without asking.")
@click.pass_context
def batch(
    ctx: click.Context,
    gear_ref: str | None,
    query: str,
    level: str,
    inputs: tuple[str, ...],
    config: tuple[str, ...],
    backend: str | None,
    priority: str,
    max_retries: int | None,
    no_cache: bool,
    yes: bool,
) -> None:
    """Run a gear over every container a search finds (``batch status|cancel ID`` too)."""
    if ctx.invoked_subcommand is not None:
        return
    if gear_ref is None:
        raise click.UsageError("give a GEAR, or a subcommand (status, cancel)")
    st = state()
    cat = st.catalog
    manifest = load_manifest(get_gear(cat, gear_ref).manifest)
    plan = plan_batch(cat, query, level, pairs(inputs, "--input"))
    for row in plan:
        mark = "run " if row.ok else "SKIP"
        detail = ", ".join(f"{k}={v.rsplit('/', 1)[-1]}" for k, v in row.inputs.items())
        click.echo(f"{mark} {row.path}  " + (detail if row.ok else "; ".join(row.problems)))
    runnable = sum(row.ok for row in plan)
    click.echo(f"{runnable} job(s) to run, {len(plan) - runnable} container(s) skipped")
    if not runnable or not (yes or click.confirm("submit?", default=False)):
        return
    options: dict[str, Any] = {"no_cache": True} if no_cache else {}
    if max_retries is not None:
        options["max_retries"] = max_retries
    created = submit_batch(
        cat,
        gear_ref,
        plan,
        coerce_config(manifest, pairs(config, "-c")),
        backend=backend or st.settings.backend,
        priority=priority,
        options=options,
    )
    click.echo(f"batch {created.id}: {runnable} job(s) pending")


@batch.command("status")
@click.argument("batch_id", type=int)
def batch_status_cmd(batch_id: int) -> None:
    """How many of the batch's jobs are in each state."""
    row, counts = batch_status(state().catalog, batch_id)
    total = sum(counts.values())
    parts = ", ".join(f"{counts.get(s.value, 0)} {s.value}" for s in JobState)
    click.echo(f"batch {row.id} ({row.spec.get('gear')}): {total} job(s): {parts}")


@batch.command("cancel")
@click.argument("batch_id", type=int)
def batch_cancel_cmd(batch_id: int) -> None:
    """Cancel every job of the batch that has not ended."""
    click.echo(f"{cancel_batch(state().catalog, batch_id)} job(s) cancelled")


@jobs.command("priority")
@click.argument("job_id", type=int)
@click.argument("level", type=click.Choice(list(PRIORITIES)))
def jobs_priority(job_id: int, level: str) -> None:
    """Change a pending job's priority."""
    cat = state().catalog
    job = get_job(cat, job_id)
    with cat.db.session() as session:
        row = lock_job(session, job.id)
        assert row is not None
        if row.state != JobState.PENDING:
            raise ConflictError(f"job {job_id} is {row.state}; only pending jobs change priority")
        if row.created_by != cat.actor.username and not cat.actor.is_admin:
            raise ConflictError(f"job {job_id} belongs to {row.created_by}")
        old = PRIORITY_NAMES.get(row.priority, str(row.priority))
        row.priority = PRIORITIES[level]
        audit.record(session, cat.actor, "job.priority", "job", row.id, None, old=old, new=level)
    click.echo(f"job {job_id}: priority {old} -> {level}")


def register(cli: click.Group) -> None:
    cli.add_command(rule)
    cli.add_command(batch)
