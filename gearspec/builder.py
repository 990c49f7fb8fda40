"""Building a new gear folder: ``manifest.json``, a ``run`` skeleton and a ``Dockerfile``.

The prompting lives in the CLI; this module turns a :class:`GearDraft` into files and
parses the compact ``--input``/``--config`` flag syntax:

* input ``NAME`` or ``NAME:TYPE1,TYPE2`` (file types the input accepts);
* config ``KEY:TYPE`` (required), ``KEY:TYPE?`` (optional) or ``KEY:TYPE=DEFAULT``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from catalog.errors import ConflictError, InvalidInputError
from gearspec.manifest import load_manifest
from gearspec.values import check_value, coerce_cli_value

CONFIG_TYPES = ("string", "integer", "number", "boolean", "array")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@\-]*$")


@dataclass(frozen=True)
class InputDraft:
    """A file input of a new gear."""

    name: str
    optional: bool = False
    types: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class ConfigDraft:
    """A config key of a new gear; ``has_default`` tells whether ``default`` is set."""

    key: str
    type: str
    default: Any = None
    has_default: bool = False
    optional: bool = False
    description: str = ""


@dataclass(frozen=True)
class GearDraft:
    """Everything ``gear create`` asks for."""

    name: str
    label: str
    author: str
    image: str
    license: str = "MIT"
    version: str = "0.1.0"
    description: str = ""
    base_image: str = "python:3.11-slim"
    inputs: Sequence[InputDraft] = ()
    config: Sequence[ConfigDraft] = ()
    url: str = ""
    source: str = ""
    extra_custom: Mapping[str, Any] = field(default_factory=dict)


def parse_input_spec(text: str, optional: bool = False) -> InputDraft:
    """``NAME`` or ``NAME:TYPE1,TYPE2`` as an :class:`InputDraft`."""
    name, _, types = text.partition(":")
    if not name:
        raise InvalidInputError(f"bad input spec {text!r}: expected NAME[:TYPE,...]")
    kinds = tuple(t.strip() for t in types.split(",") if t.strip())
    return InputDraft(name=name.strip(), optional=optional, types=kinds)


def parse_config_spec(text: str) -> ConfigDraft:
    """``KEY:TYPE``, ``KEY:TYPE?`` or ``KEY:TYPE=DEFAULT`` as a :class:`ConfigDraft`."""
    head, has_default, default_text = text.partition("=")
    key, _, kind = head.partition(":")
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if not key or kind not in CONFIG_TYPES or (optional and has_default):
        raise InvalidInputError(
            f"bad config spec {text!r}: expected KEY:TYPE, KEY:TYPE? or KEY:TYPE=DEFAULT "
            f"with TYPE one of {', '.join(CONFIG_TYPES)}"
        )
    if not has_default:
        return ConfigDraft(key=key, type=kind, optional=optional)
    return make_config_draft(key, kind, default_text)


def make_config_draft(key: str, kind: str, default_text: str) -> ConfigDraft:
    """A config draft whose default is given as command-line text."""
    spec: dict[str, Any] = {"type": kind}
    if kind == "array":
        spec["items"] = {"type": "string"}
    try:
        default = coerce_cli_value(spec, default_text)
    except ValueError as exc:
        raise InvalidInputError(f"config {key}: default {default_text!r}: {exc}") from exc
    problems = check_value(spec, default, f"$.config.{key}.default")
    if problems:
        raise InvalidInputError("; ".join(str(p) for p in problems))
    return ConfigDraft(key=key, type=kind, default=default, has_default=True)


def build_manifest(draft: GearDraft) -> dict[str, Any]:
    """The manifest document of ``draft``; raises ManifestError if it is not valid."""
    if not _IMAGE.match(draft.image) or not _IMAGE.match(draft.base_image):
        raise InvalidInputError(f"bad image reference {draft.image!r} / {draft.base_image!r}")
    inputs: dict[str, Any] = {}
    for item in draft.inputs:
        entry: dict[str, Any] = {"base": "file", "description": item.description}
        if item.optional:
            entry["optional"] = True
        if item.types:
            entry["type"] = {"enum": list(item.types)}
        inputs[item.name] = entry
    config: dict[str, Any] = {}
    for conf in draft.config:
        spec: dict[str, Any] = {"type": conf.type, "description": conf.description}
        if conf.type == "array":
            spec["items"] = {"type": "string"}
        if conf.has_default:
            spec["default"] = conf.default
        elif conf.optional:
            spec["optional"] = True
        config[conf.key] = spec
    doc: dict[str, Any] = {
        "name": draft.name,
        "label": draft.label,
        "description": draft.description,
        "version": draft.version,
        "author": draft.author,
        "license": draft.license,
        "url": draft.url,
        "source": draft.source,
        "inputs": inputs,
        "config": config,
        "environment": {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
        "custom": {**draft.extra_custom, "gear-builder": {"image": draft.image}},
    }
    return load_manifest(doc).to_dict()


def write_gear_files(
    out_dir: Path, files: Mapping[str, tuple[str, int]], force: bool
) -> list[Path]:
    """Write ``{name: (text, mode)}`` into ``out_dir``; ConflictError if a file exists
    and not ``force``.  Returns the written paths."""
    out_dir = Path(out_dir)
    clashes = [name for name in files if (out_dir / name).exists()]
    if clashes and not force:
        raise ConflictError(f"{out_dir}: {', '.join(clashes)} already exist (use --force)")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (text, mode) in files.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        os.chmod(path, mode)
        written.append(path)
    return written


def manifest_text(doc: Mapping[str, Any]) -> str:
    """A manifest document as pretty JSON text."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def write_gear(draft: GearDraft, out_dir: Path, force: bool = False) -> list[Path]:
    """Write ``manifest.json``, ``run`` (0755) and ``Dockerfile`` for ``draft``."""
    doc = build_manifest(draft)
    templates = resources.files("gearspec")
    run = Template(templates.joinpath("builder_run.tmpl").read_text("utf-8"))
    dockerfile = Template(templates.joinpath("builder_dockerfile.tmpl").read_text("utf-8"))
    files = {
        "manifest.json": (manifest_text(doc), 0o644),
        "run": (run.substitute(gear_name=draft.name), 0o755),
        "Dockerfile": (dockerfile.substitute(base_image=draft.base_image), 0o644),
    }
    return write_gear_files(out_dir, files, force)
