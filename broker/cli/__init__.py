"""The ``gearbroker`` command line.

This is the only place that turns :class:`catalog.errors.GearbrokerError` into exit codes and
messages; every command below raises and lets :func:`main` report.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from broker.cli import gear_registry_commands  # noqa: F401 - registers gear install/list/...
from broker.cli.automation_commands import register as register_automation
from broker.cli.catalog_commands import register as register_catalog
from broker.cli.context import CliState
from broker.cli.demo import demo
from broker.cli.gear_commands import gear
from broker.cli.ingest_commands import ingest
from broker.cli.job_commands import register as register_jobs
from broker.cli.site_commands import register as register_site
from catalog.errors import (
    ConfigError,
    ConflictError,
    DatabaseError,
    GearbrokerError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    StoreError,
)

#: Exit codes by error class (first match wins); 1 for any other GearbrokerError.
EXIT_CODES: tuple[tuple[type[GearbrokerError], int], ...] = (
    (InvalidInputError, 2),
    (NotFoundError, 3),
    (ConflictError, 4),
    (PermissionDeniedError, 5),
    (ConfigError, 6),
    (DatabaseError, 7),
    (StoreError, 8),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $GEARBROKER_CONFIG or ~/.config/gearbroker/config.toml).",
)
@click.option("--database", default=None, help="Catalog database URL (overrides the config).")
@click.option("--store", default=None, help="Blob store directory or s3:// URL.")
@click.option("--user", default=None, help="Act as this user.")
@click.version_option(package_name="gearbroker")
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    database: str | None,
    store: str | None,
    user: str | None,
) -> None:
    """gearbroker: a self-hosted catalog and compute layer for research imaging."""
    flags = {"catalog.database": database, "catalog.store": store, "user.name": user}
    state = CliState(flags=flags, config_path=config_path)
    ctx.obj = state
    ctx.call_on_close(state.close)


register_catalog(cli)
register_jobs(cli)
register_automation(cli)
register_site(cli)
cli.add_command(gear)
cli.add_command(demo)
cli.add_command(ingest)


def exit_code_for(error: GearbrokerError) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(error, cls):
            return code
    return 1


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except GearbrokerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exit_code_for(exc))
    if isinstance(result, int) and result:
        sys.exit(result)
