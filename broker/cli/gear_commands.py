"""``gearbroker gear ...``: validate, create, config and import-boutiques.

Failures raise GearbrokerError subclasses; the top-level CLI turns them into an exit
code and message.  ``validate`` prints a verdict per manifest first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from catalog.errors import InvalidInputError
from gearspec.boutiques import load_boutiques, write_imported_gear
from gearspec.builder import (
    CONFIG_TYPES,
    ConfigDraft,
    GearDraft,
    InputDraft,
    make_config_draft,
    parse_config_spec,
    parse_input_spec,
    write_gear,
)
from gearspec.errors import InvocationError, Issue, ManifestError, child
from gearspec.filetypes import guess_file_type
from gearspec.manifest import MANIFEST_FILE, Manifest, load_manifest
from gearspec.staging import Destination, InputFile, build_config_json
from gearspec.values import coerce_cli_value

gear = click.Group("gear", help="Work with Flywheel-compatible gears (manifest.json + image).")


def _manifest_paths(paths: tuple[Path, ...]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir() and not (path / MANIFEST_FILE).exists():
            out.extend(sorted(path.glob("*.json")))
        else:
            out.append(path)
    return out


@gear.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate_cmd(paths: tuple[Path, ...]) -> None:
    """Validate manifests (files, gear folders, or folders of *.json manifests)."""
    files = _manifest_paths(paths)
    failed: list[Issue] = []
    for path in files:
        try:
            manifest = load_manifest(path)
        except ManifestError as exc:
            click.echo(f"INVALID  {path}: {len(exc.issues)} problem(s)")
            for issue in exc.issues:
                click.echo(f"    {issue}")
            failed.append(Issue(str(path), f"{len(exc.issues)} problem(s)"))
        else:
            click.echo(f"VALID    {path}: {manifest.name} {manifest.version}")
    click.echo(f"{len(files) - len(failed)} of {len(files)} manifest(s) valid")
    if failed:
        raise ManifestError(failed, source=f"({len(failed)} of {len(files)} manifests)")


def _ask(value: str | None, prompt: str, interactive: bool, default: str | None = None) -> str:
    if value is not None:
        return value
    if interactive:
        return str(click.prompt(prompt, default=default))
    if default is not None:
        return default
    raise InvalidInputError(f"--{prompt.lower().replace(' ', '-')} is required")


def _prompt_inputs() -> list[InputDraft]:
    drafts = []
    while name := click.prompt("Input name (empty to finish)", default="", show_default=False):
        optional = click.confirm(f"Is {name} optional?", default=False)
        types = click.prompt("File types (comma-separated, empty for any)", default="")
        spec = parse_input_spec(f"{name}:{types}", optional=optional)
        drafts.append(spec)
    return drafts


def _prompt_config() -> list[ConfigDraft]:
    drafts = []
    while key := click.prompt("Config key (empty to finish)", default="", show_default=False):
        kind = click.prompt("Type", type=click.Choice(CONFIG_TYPES), default="string")
        default = click.prompt("Default (empty for none)", default="", show_default=False)
        if default:
            drafts.append(make_config_draft(key, kind, default))
        else:
            optional = click.confirm(f"Is {key} optional?", default=False)
            drafts.append(ConfigDraft(key=key, type=kind, optional=optional))
    return drafts


@gear.command("create")
@click.option("--name", help="Gear name (lowercase letters, digits, '-').")
@click.option("--label", help="Human-friendly name.")
@click.option("--description", help="What the gear does.")
@click.option("--version", "version", help="Gear version.")
@click.option("--author", help="Author of the gear or algorithm.")
@click.option("--license", "license_id", help="SPDX license id or 'Other'.")
@click.option("--image", help="Image the gear runs in (custom.gear-builder.image).")
@click.option("--base-image", help="FROM image of the generated Dockerfile.")
@click.option("--input", "inputs", multiple=True, help="Required file input NAME[:TYPE,...].")
@click.option("--optional-input", "optional_inputs", multiple=True, help="Optional file input.")
@click.option("--config", "configs", multiple=True, help="KEY:TYPE, KEY:TYPE? or KEY:TYPE=DEFAULT.")
@click.option("--output-dir", type=click.Path(path_type=Path), help="Folder (default ./NAME).")
@click.option("--non-interactive", is_flag=True, help="Never prompt; missing values are errors.")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def create_cmd(**opts: Any) -> None:
    """Write manifest.json, a run skeleton and a Dockerfile for a new gear."""
    ask = not opts["non_interactive"]
    name = _ask(opts["name"], "Name", ask)
    draft_inputs = [parse_input_spec(s) for s in opts["inputs"]]
    draft_inputs += [parse_input_spec(s, optional=True) for s in opts["optional_inputs"]]
    draft_config = [parse_config_spec(s) for s in opts["configs"]]
    draft = GearDraft(
        name=name,
        label=_ask(opts["label"], "Label", ask, default=name),
        description=_ask(opts["description"], "Description", ask, default=""),
        version=_ask(opts["version"], "Version", ask, default="0.1.0"),
        author=_ask(opts["author"], "Author", ask),
        license=_ask(opts["license_id"], "License", ask, default="MIT"),
        image=_ask(opts["image"], "Image", ask, default=f"{name}:0.1.0"),
        base_image=_ask(opts["base_image"], "Base image", ask, default="python:3.11-slim"),
        inputs=draft_inputs or (_prompt_inputs() if ask else []),
        config=draft_config or (_prompt_config() if ask else []),
    )
    out_dir = opts["output_dir"] or Path(name)
    for path in write_gear(draft, out_dir, force=opts["force"]):
        click.echo(f"wrote {path}")


def _pairs(values: tuple[str, ...], flag: str) -> list[tuple[str, str]]:
    out = []
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"{flag} {text!r}: expected NAME=VALUE")
        out.append((key, value))
    return out


def _user_config(manifest: Manifest, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    specs = manifest.config
    values: dict[str, Any] = {}
    issues = []
    for key, text in pairs:
        if key not in specs:
            values[key] = text  # reported as an unknown key by the resolver
            continue
        try:
            values[key] = coerce_cli_value(specs[key], text)
        except ValueError as exc:
            issues.append(Issue(child("$.config", key), str(exc)))
    if issues:
        raise InvocationError(issues, source="-c values")
    return values


@gear.command("config")
@click.argument("manifest_path", type=click.Path(path_type=Path))
@click.option("-i", "--input", "inputs", multiple=True, help="NAME=PATH of a file input.")
@click.option("-c", "--config", "configs", multiple=True, help="KEY=VALUE of a config key.")
@click.option("-t", "--type", "types", multiple=True, help="NAME=FILETYPE of an input file.")
@click.option("--destination", default="analysis:local", show_default=True, help="TYPE:ID.")
@click.option("--job-id", default="local", show_default=True, help="Job id (show-job gears).")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("config.json"),
    show_default=True,
    help="Where to write config.json.",
)
def config_cmd(
    manifest_path: Path,
    *,
    inputs: tuple[str, ...],
    types: tuple[str, ...],
    configs: tuple[str, ...],
    destination: str,
    job_id: str,
    output: Path,
) -> None:
    """Write config.json for a local test run of a gear.

    Input file types are guessed from file names unless given with -t.
    """
    manifest = load_manifest(manifest_path)
    dest_type, sep, dest_id = destination.partition(":")
    if not sep:
        raise InvalidInputError(f"--destination {destination!r}: expected TYPE:ID")
    kinds = dict(_pairs(types, "-t"))
    files = [
        InputFile(
            name=name,
            source_path=Path(path),
            type=kinds.get(name, guess_file_type(Path(path).name)),
        )
        for name, path in _pairs(inputs, "-i")
    ]
    doc = build_config_json(
        manifest,
        _user_config(manifest, _pairs(configs, "-c")),
        files,
        Destination(dest_type, dest_id),
        job={"id": job_id},
    )
    output.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    click.echo(f"wrote {output}")


@gear.command("import-boutiques")
@click.argument("descriptor", type=click.Path(path_type=Path))
@click.option("--output-dir", type=click.Path(path_type=Path), help="Folder (default ./NAME).")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def import_boutiques_cmd(descriptor: Path, output_dir: Path | None, force: bool) -> None:
    """Convert a Boutiques descriptor into a gear (manifest.json + run wrapper)."""
    result = load_boutiques(descriptor)
    out_dir = output_dir or Path(result.manifest["name"])
    for path in write_imported_gear(result, out_dir, force=force):
        click.echo(f"wrote {path}")
    if result.unsupported:
        click.echo("Could not be expressed in the gear:")
        for note in result.unsupported:
            click.echo(f"  - {note}")
