"""CLI commands for the catalog: init, db, groups/projects, upload, ls, download, rm, store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from broker.cli import metadata_commands
from broker.cli.context import state
from broker.cli.output import print_tree
from broker.config import write_default_config
from catalog.catalog import Catalog
from catalog.db import Database, current_revision, head_revision, upgrade
from catalog.errors import PermissionDeniedError
from catalog.gc import collect_garbage


@click.command()
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
def init(force: bool) -> None:
    """Create the config file, the catalog database and the blob store."""
    st = state()
    settings = st.settings
    if not settings.config_found or force:
        write_default_config(settings.config_path, settings, force=force)
        click.echo(f"config:   {settings.config_path}")
    else:
        click.echo(f"config:   {settings.config_path} (kept)")
    cat = Catalog.initialize(
        settings.database_url, settings.store_url, settings.user, **st.store_options()
    )
    cat.close()
    click.echo(f"database: {settings.database_url}")
    click.echo(f"store:    {settings.store_url}")
    click.echo(f"admin:    {settings.user}")


@click.group()
def db() -> None:
    """Catalog database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations."""
    database = Database(state().settings.database_url)
    try:
        before = current_revision(database.engine)
        upgrade(database.engine)
        click.echo(f"schema: {before or 'empty'} -> {head_revision()}")
    finally:
        database.dispose()


@db.command("status")
def db_status() -> None:
    """Show the database's schema revision and the code's."""
    database = Database(state().settings.database_url)
    try:
        click.echo(f"database: {current_revision(database.engine) or 'empty'}")
        click.echo(f"code:     {head_revision()}")
    finally:
        database.dispose()


@click.group()
def group() -> None:
    """Groups (top of the hierarchy)."""


@group.command("create")
@click.argument("label")
def group_create(label: str) -> None:
    """Create a group (site admins only)."""
    g = state().catalog.create_group(label)
    click.echo(f"created group {g.label} (id {g.id})")


@click.group()
def project() -> None:
    """Projects and their permissions."""


@project.command("create")
@click.argument("path", metavar="GROUP/PROJECT")
def project_create(path: str) -> None:
    """Create a project in a group."""
    group_label, sep, label = path.partition("/")
    if not sep or not label:
        raise click.BadParameter("give GROUP/PROJECT", param_hint="PATH")
    p = state().catalog.create_project(group_label, label)
    click.echo(f"created project {path} (id {p.id})")


@project.group("permission")
def permission() -> None:
    """Project (or group) roles: admin, rw, ro."""


@permission.command("add")
@click.argument("path", metavar="GROUP[/PROJECT]")
@click.argument("user")
@click.argument("role", type=click.Choice(["admin", "rw", "ro"]))
def permission_add(path: str, user: str, role: str) -> None:
    """Grant USER the ROLE on a project (or a whole group)."""
    state().catalog.add_permission(path, user, role)
    click.echo(f"{user}: {role} on {path}")


@click.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--to", "dest", required=True, help="group/project[/subject/session/acquisition]")
def upload(sources: tuple[Path, ...], dest: str) -> None:
    """Upload files; a directory's sub-folders become the levels below --to."""
    results = state().catalog.upload(list(sources), dest)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
        click.echo(f"{r.status:9} {r.path} (v{r.version}, {r.size} bytes)")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    click.echo(f"{len(results)} file(s): {summary}")


@click.command("ls")
@click.argument("path", required=False)
@click.option("-d", "--depth", type=click.IntRange(1, 10), default=1, show_default=True)
@click.option("--no-files", is_flag=True, help="Containers only.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls_(path: str | None, depth: int, no_files: bool, as_json: bool) -> None:
    """List the hierarchy below PATH (the groups when omitted) as a tree."""
    nodes = state().catalog.tree(path, depth=depth, files=not no_files)
    if as_json:
        from dataclasses import asdict

        click.echo(json.dumps([asdict(n) for n in nodes], indent=2))
    else:
        print_tree(nodes)


@click.command()
@click.argument("path")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace existing local files.")
def download(path: str, dest: Path, overwrite: bool) -> None:
    """Download a file, or a container's files as a folder tree, to DEST."""
    written = state().catalog.download(path, dest, overwrite=overwrite)
    for target in written:
        click.echo(str(target))
    click.echo(f"{len(written)} file(s) downloaded")


@click.command()
@click.argument("path")
@click.option("-r", "--recursive", is_flag=True, help="Remove a container with its contents.")
def rm(path: str, recursive: bool) -> None:
    """Remove a file (all its versions) or a container."""
    state().catalog.rm(path, recursive=recursive)
    click.echo(f"removed {path}")


@click.group()
def store() -> None:
    """The blob store."""


@store.command("gc")
@click.option(
    "--grace",
    type=float,
    default=3600.0,
    show_default=True,
    help="Keep unreferenced blobs younger than this many seconds (uploads in flight).",
)
def store_gc(grace: float) -> None:
    """Delete blobs no file references (site admins only)."""
    cat = state().catalog
    if not cat.actor.is_admin:
        raise PermissionDeniedError("only site admins run store gc")
    report = collect_garbage(cat, grace_seconds=grace)
    click.echo(
        f"scanned {report.scanned}, deleted {report.deleted} ({report.bytes_freed} bytes), "
        f"kept {report.kept_referenced} referenced and {report.kept_recent} recent"
    )


@click.group("config")
def config_group() -> None:
    """Configuration."""


@config_group.command("show")
def config_show() -> None:
    """Print every setting, its value and where it came from."""
    settings = state().settings
    found = "" if settings.config_found else " (not found)"
    click.echo(f"# config file: {settings.config_path}{found}")
    rows = [
        (key, "" if value is None else str(value), source)
        for key, value, source in settings.as_rows()
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = min(60, max(len(r[1]) for r in rows))
    for key, value, source in rows:
        click.echo(f"{key:{width}}  {value:{vwidth}}  [{source}]")


def register(cli: click.Group) -> None:
    """Attach the catalog commands to the top-level group."""
    for command in (init, db, group, project, upload, ls_, download, rm, store, config_group):
        cli.add_command(command)
    metadata_commands.register(cli)
