"""CLI commands for metadata and search: info, tag, search."""

from __future__ import annotations

import json
import sys
from typing import IO, TextIO, cast

import click

from broker.cli.context import state
from catalog.dataview import write_rows
from catalog.errors import InvalidInputError
from catalog.infokeys import parse_value
from catalog.query import columns_for


@click.group()
def info() -> None:
    """Free-form JSON metadata (dotted keys)."""


@info.command("get")
@click.argument("path")
@click.argument("key", required=False)
def info_get(path: str, key: str | None) -> None:
    """Print PATH's info (or one dotted KEY) as JSON."""
    click.echo(json.dumps(state().catalog.info_get(path, key), indent=2, sort_keys=True))


@info.command("set")
@click.argument("path")
@click.argument("items", nargs=-1, required=True, metavar="KEY=VALUE...")
def info_set(path: str, items: tuple[str, ...]) -> None:
    """Set dotted keys; values are JSON when they parse (30, true, [1,2]), else strings."""
    values = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise InvalidInputError(f"expected KEY=VALUE, got {item!r}")
        values[key] = parse_value(raw)
    click.echo(json.dumps(state().catalog.info_set(path, values), indent=2, sort_keys=True))


@info.command("delete")
@click.argument("path")
@click.argument("keys", nargs=-1, required=True)
def info_delete(path: str, keys: tuple[str, ...]) -> None:
    """Delete dotted keys."""
    click.echo(json.dumps(state().catalog.info_delete(path, keys), indent=2, sort_keys=True))


@click.group()
def tag() -> None:
    """Tags on containers and files."""


@tag.command("add")
@click.argument("path")
@click.argument("tags", nargs=-1, required=True)
def tag_add(path: str, tags: tuple[str, ...]) -> None:
    click.echo(", ".join(state().catalog.tags_add(path, tags)))


@tag.command("rm")
@click.argument("path")
@click.argument("tags", nargs=-1, required=True)
def tag_rm(path: str, tags: tuple[str, ...]) -> None:
    click.echo(", ".join(state().catalog.tags_rm(path, tags)))


@click.command()
@click.argument("query")
@click.option(
    "--level",
    "target",
    default="file",
    show_default=True,
    type=click.Choice(
        ["file", "group", "project", "subject", "session", "acquisition", "analysis"]
    ),
    help="What one result row is.",
)
@click.option(
    "--columns", default=None, help="Comma-separated fields, e.g. file.name,session.label"
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "jsonl", "csv"]),
    default="table",
    show_default=True,
)
@click.option("--limit", type=click.IntRange(min=1), default=None)
@click.option("-o", "--output", type=click.File("w"), default=None, help="Write to a file.")
def search(
    query: str,
    target: str,
    columns: str | None,
    fmt: str,
    limit: int | None,
    output: IO[str] | None,
) -> None:
    """Search the catalog; a Data View: one row per match with columns from any level.

    Example: file.type = dicom and session.info.age > 30 and acquisition.label =~ "T1"
    """

    cols = columns_for(target, columns.split(",") if columns else None)
    rows = state().catalog.search(query, target=target, columns=cols, limit=limit)
    count = write_rows(rows, cols, fmt, cast(TextIO, output) if output else sys.stdout)
    if fmt == "table":
        click.echo(f"{count} row(s)", err=True)


def register(cli: click.Group) -> None:
    for command in (info, tag, search):
        cli.add_command(command)
