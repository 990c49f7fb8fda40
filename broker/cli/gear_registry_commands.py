"""``gear install|list|show|rm``: the catalog's gear registry."""

from __future__ import annotations

import json

import click

from broker.cli.context import state
from broker.cli.gear_commands import gear
from catalog.errors import InvalidInputError
from catalog.gears import get_gear, install_gear, list_gears, remove_gear
from gearspec.manifest import load_manifest


@gear.command("install")
@click.argument("source", type=click.Path(exists=True))
@click.option("--image", default=None, help="Container image (default: the manifest's).")
def gear_install(source: str, image: str | None) -> None:
    """Install a gear from its folder or manifest.json (versions live side by side)."""
    manifest = load_manifest(source)
    image = image or manifest.image
    if not image:
        raise InvalidInputError(
            f"{source}: no image in custom.gear-builder.image; give one with --image"
        )
    row, created = install_gear(
        state().catalog, manifest.to_dict(), manifest.manifest_hash(), image, manifest.image_digest
    )
    verb = "installed" if created else "already installed"
    click.echo(f"{verb} {row.name}:{row.version} (image {row.image})")


@gear.command("list")
@click.option("--all", "all_versions", is_flag=True, help="Every version, not only the newest.")
def gear_list(all_versions: bool) -> None:
    """Installed gears, newest version first."""
    rows = list_gears(state().catalog, all_versions=all_versions)
    for row in rows:
        flag = " (disabled)" if row.disabled else ""
        click.echo(f"{row.name:32} {row.version:16} {row.image or '-'}{flag}")
    click.echo(f"{len(rows)} gear(s)", err=True)


@gear.command("show")
@click.argument("ref", metavar="NAME[:VERSION]")
def gear_show(ref: str) -> None:
    """Print an installed gear's manifest and registry facts as JSON."""
    row = get_gear(state().catalog, ref)
    click.echo(
        json.dumps(
            {
                "name": row.name,
                "version": row.version,
                "image": row.image,
                "image_digest": row.image_digest,
                "manifest_hash": row.manifest_hash,
                "installed": row.created.isoformat(),
                "installed_by": row.created_by,
                "manifest": row.manifest,
            },
            indent=2,
        )
    )


@gear.command("rm")
@click.argument("ref", metavar="NAME:VERSION")
def gear_rm(ref: str) -> None:
    """Remove a gear version that never ran (gears with jobs stay for provenance)."""
    if ":" not in ref:
        raise InvalidInputError("give NAME:VERSION to remove one version")
    row = remove_gear(state().catalog, ref)
    click.echo(f"removed {row.name}:{row.version}")
