"""Converting a Boutiques descriptor into a gear: manifest plus a Python ``run`` wrapper.

File inputs become gear file inputs; String, Number and Flag inputs become config keys
(lists become ``array``).  The wrapper fills the command-line template from config.json
and runs the tool without a shell, from ``output/``, so values stay inert data.  Whatever
the gear cannot express is listed in :attr:`BoutiquesImport.unsupported`.
"""

from __future__ import annotations

import json
import pprint
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from gearspec.builder import manifest_text, write_gear_files
from gearspec.errors import BoutiquesError, Issue, ManifestError, child
from gearspec.manifest import load_manifest

_SHELL_WORDS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "2>", "2>&1", "&>"}
_DROPPED_INPUT_KEYS = ("requires-inputs", "disables-inputs", "value-requires", "value-disables")
_DROPPED_TOP_KEYS = ("groups", "output-files", "tests", "error-codes", "online-platform-urls")
_TYPES = ("File", "String", "Number", "Flag")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class BoutiquesImport:
    """A converted gear: manifest document, run wrapper text, what could not be expressed."""

    manifest: dict[str, Any]
    run_script: str
    unsupported: tuple[str, ...]


def load_boutiques(path: Path) -> BoutiquesImport:
    """Read a descriptor file and convert it (see :func:`import_boutiques`)."""
    try:
        doc = json.loads(Path(path).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BoutiquesError([Issue("$", f"cannot read JSON: {exc}")], source=str(path)) from exc
    return import_boutiques(doc, source=str(path))


def import_boutiques(descriptor: object, source: str | None = None) -> BoutiquesImport:
    """Convert a descriptor; :class:`BoutiquesError` when it is malformed or the result is
    not a valid manifest (each problem with its path)."""
    issues = _structure_issues(descriptor)
    if issues:
        raise BoutiquesError(issues, source=source)
    assert isinstance(descriptor, dict)
    notes: list[str] = []
    inputs: dict[str, Any] = {}
    config: dict[str, Any] = {}
    keys: dict[str, Any] = {}
    for spec in descriptor["inputs"]:
        _convert_input(spec, inputs, config, keys, notes)
    template = _template_words(descriptor["command-line"], notes)
    manifest = _manifest(descriptor, inputs, config, notes)
    for key in _DROPPED_TOP_KEYS:
        if descriptor.get(key):
            notes.append(
                f"{key}: not expressed in a gear (the gear keeps whatever the tool "
                "writes to output/)"
                if key == "output-files"
                else f"{key}: not expressed in a gear"
            )
    try:
        load_manifest(manifest)
    except ManifestError as exc:
        raise BoutiquesError(exc.issues, source=source) from exc
    plan = {"template": template, "keys": keys}
    text = resources.files("gearspec").joinpath("boutiques_run.tmpl").read_text("utf-8")
    script = Template(text).substitute(gear_name=manifest["name"], plan=pprint.pformat(plan))
    return BoutiquesImport(manifest=manifest, run_script=script, unsupported=tuple(notes))


def write_imported_gear(result: BoutiquesImport, out_dir: Path, force: bool = False) -> list[Path]:
    """Write ``manifest.json`` and the ``run`` wrapper (0755) of a converted gear."""
    files = {
        "manifest.json": (manifest_text(result.manifest), 0o644),
        "run": (result.run_script, 0o755),
    }
    return write_gear_files(out_dir, files, force)


def _structure_issues(doc: object) -> list[Issue]:
    if not isinstance(doc, dict):
        return [Issue("$", "a descriptor must be a JSON object")]
    issues = []
    for key, kind in (("name", str), ("command-line", str), ("inputs", list)):
        if not isinstance(doc.get(key), kind):
            issues.append(Issue(child("$", key), f"required, must be a {kind.__name__}"))
    seen: set[str] = set()
    for index, spec in enumerate(doc.get("inputs") or []):
        path = child("$.inputs", index)
        if not isinstance(spec, dict):
            issues.append(Issue(path, "an input must be an object"))
            continue
        ident = spec.get("id")
        if not isinstance(ident, str) or not re.fullmatch(r"[0-9_a-zA-Z]+", ident):
            issues.append(Issue(child(path, "id"), "id must be letters, digits, underscores"))
        elif ident in seen:
            issues.append(Issue(child(path, "id"), f"duplicate id {ident!r}"))
        else:
            seen.add(ident)
        if spec.get("type") not in _TYPES:
            issues.append(Issue(child(path, "type"), f"type must be one of {list(_TYPES)}"))
        if spec.get("type") == "Flag" and not spec.get("command-line-flag"):
            issues.append(Issue(child(path, "command-line-flag"), "a Flag needs a flag"))
    return issues


def _convert_input(
    spec: Mapping[str, Any],
    inputs: dict[str, Any],
    config: dict[str, Any],
    keys: dict[str, Any],
    notes: list[str],
) -> None:
    ident, kind = spec["id"], spec["type"]
    is_list = bool(spec.get("list"))
    for key in _DROPPED_INPUT_KEYS:
        if spec.get(key):
            notes.append(f"input {ident}: {key} is not expressed (no input dependencies)")
    if kind == "File":
        if is_list:
            notes.append(f"input {ident}: a list of files became a single file input")
        entry: dict[str, Any] = {"base": "file", "description": spec.get("description", "")}
        if spec.get("optional"):
            entry["optional"] = True
        inputs[ident] = entry
    else:
        config[ident] = _config_spec(spec, is_list, notes)
    value_key = spec.get("value-key")
    if isinstance(value_key, str) and value_key:
        keys[value_key] = {
            "id": ident,
            "source": "file" if kind == "File" else "config",
            "kind": "flag" if kind == "Flag" else "value",
            "flag": spec.get("command-line-flag"),
            "flag_sep": spec.get("command-line-flag-separator", " "),
            "list_sep": spec.get("list-separator", " "),
        }
    else:
        notes.append(f"input {ident}: no value-key, so it never reaches the command line")


def _config_spec(spec: Mapping[str, Any], is_list: bool, notes: list[str]) -> dict[str, Any]:
    kind = spec["type"]
    scalar: dict[str, Any] = {
        "String": {"type": "string"},
        "Flag": {"type": "boolean"},
        "Number": {"type": "integer" if spec.get("integer") else "number"},
    }[kind]
    if kind == "Number":
        for ours, theirs in (("minimum", "minimum"), ("maximum", "maximum")):
            if theirs in spec:
                scalar[ours] = spec[theirs]
        if spec.get("exclusive-minimum"):
            scalar["exclusiveMinimum"] = True
        if spec.get("exclusive-maximum"):
            scalar["exclusiveMaximum"] = True
    if spec.get("value-choices"):
        scalar["enum"] = list(spec["value-choices"])
    if kind == "Flag" and is_list:
        notes.append(f"input {spec['id']}: a Flag cannot be a list; kept as one boolean")
        is_list = False
    out: dict[str, Any] = {"type": "array", "items": scalar} if is_list else dict(scalar)
    if is_list:
        for ours, theirs in (("minItems", "min-list-entries"), ("maxItems", "max-list-entries")):
            if theirs in spec:
                out[ours] = spec[theirs]
    out["description"] = spec.get("description", spec.get("name", ""))
    if "default-value" in spec:
        out["default"] = spec["default-value"]
    elif kind == "Flag":
        out["default"] = False
    elif spec.get("optional"):
        out["optional"] = True
    return out


def _template_words(command_line: str, notes: list[str]) -> list[str]:
    try:
        words = shlex.split(command_line)
    except ValueError as exc:
        notes.append(f"command-line: cannot be split into words ({exc}); used as one word")
        return [command_line]
    shell = sorted({w for w in words if w in _SHELL_WORDS or "$(" in w or "`" in w})
    if shell:
        notes.append(
            f"command-line: shell syntax {shell} is not run by a shell here; the words are "
            "passed to the tool literally (wrap the pipeline in a script inside the image)"
        )
    return words


def _manifest(
    descriptor: Mapping[str, Any],
    inputs: dict[str, Any],
    config: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    raw_name = descriptor["name"]
    name = re.sub(r"[^a-z0-9]+", "-", raw_name.lower()).strip("-")[:100] or "boutiques-tool"
    custom: dict[str, Any] = {"boutiques": {"name": raw_name}}
    manifest: dict[str, Any] = {
        "name": name,
        "label": raw_name[:100],
        "description": str(descriptor.get("description", ""))[:5000],
        "version": str(descriptor.get("tool-version") or "0"),
        "author": str(descriptor.get("author") or "unknown")[:100],
        "license": "Other",
        "url": _uri(descriptor.get("url")),
        "source": _uri(descriptor.get("descriptor-url")),
        "inputs": inputs,
        "config": config,
        "custom": custom,
    }
    notes.append("license: Boutiques has no license field; set to 'Other'")
    if not descriptor.get("author"):
        notes.append("author: missing in the descriptor; set to 'unknown'")
    if descriptor.get("doi") or descriptor.get("tool-doi"):
        manifest["cite"] = " ".join(
            f"{k}: {descriptor[k]}" for k in ("tool-doi", "doi") if descriptor.get(k)
        )
    env = descriptor.get("environment-variables") or []
    if env:
        manifest["environment"] = {e["name"]: str(e.get("value", "")) for e in env}
    _container(descriptor.get("container-image"), custom, notes)
    _resources(descriptor.get("suggested-resources"), custom, notes)
    return manifest


def _uri(value: object) -> str:
    ok = isinstance(value, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S*$", value)
    return str(value) if ok else ""


def _container(image: object, custom: dict[str, Any], notes: list[str]) -> None:
    if not isinstance(image, dict) or not image.get("image"):
        notes.append("container-image: none given; set custom.gear-builder.image yourself")
        return
    name = str(image["image"])
    index = image.get("index")
    if index and not name.startswith(str(index)):
        name = f"{str(index).rstrip('/')}/{name}"
    custom["gear-builder"] = {"image": name}
    if image.get("type") == "singularity":
        custom.setdefault("gearbroker", {})["runtime"] = "apptainer"
    digest = image.get("container-hash")
    if isinstance(digest, str) and _DIGEST.match(digest):
        custom.setdefault("gearbroker", {})["image-digest"] = digest
    for key in ("container-opts", "working-directory", "entrypoint"):
        if image.get(key):
            notes.append(f"container-image.{key}: not expressed in a gear")


def _resources(suggested: object, custom: dict[str, Any], notes: list[str]) -> None:
    if not isinstance(suggested, dict):
        return
    res: dict[str, Any] = {}
    if suggested.get("cpu-cores"):
        res["cpus"] = suggested["cpu-cores"]
    if suggested.get("ram"):
        res["memory"] = f"{max(1, round(float(suggested['ram']) * 1024))}M"
    if suggested.get("disk-space"):
        res["disk"] = f"{max(1, round(float(suggested['disk-space']) * 1024))}M"
    if suggested.get("walltime-estimate"):
        res["walltime"] = max(1, round(float(suggested["walltime-estimate"])))
    if suggested.get("nodes", 1) != 1:
        notes.append("suggested-resources.nodes: multi-node runs are not expressed")
    if res:
        custom.setdefault("gearbroker", {})["resources"] = res
