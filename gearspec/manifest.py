"""A validated gear manifest with typed accessors.

``load_manifest`` is the one way in: it reads a file (or a gear folder holding
``manifest.json``) or takes a dict, validates it in both phases and returns a
:class:`Manifest`, or raises :class:`~gearspec.errors.ManifestError` with every problem.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gearspec.errors import Issue, ManifestError
from gearspec.extensions import ExitCodeClasses, GearbrokerExtension, Resources, parse_extension
from gearspec.validate import check_manifest

MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class InputSpec:
    """One manifest input: its name, base (file, context, api-key) and directives."""

    name: str
    base: str
    optional: bool
    description: str
    read_only: bool
    directives: Mapping[str, Mapping[str, Any]]


def canonical_json(doc: object) -> bytes:
    """Canonical UTF-8 JSON: sorted keys, no whitespace, non-ASCII kept as is."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Manifest:
    """A manifest that passed validation.  Treat it as read-only."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        """Wrap an already validated document (use :func:`load_manifest` to validate)."""
        self._data: dict[str, Any] = copy.deepcopy(dict(data))
        self._extension = parse_extension(self.custom)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the manifest document."""
        return copy.deepcopy(self._data)

    def manifest_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of the manifest."""
        return hashlib.sha256(canonical_json(self._data)).hexdigest()

    @property
    def name(self) -> str:
        return str(self._data["name"])

    @property
    def version(self) -> str:
        return str(self._data["version"])

    @property
    def label(self) -> str:
        return str(self._data["label"])

    @property
    def description(self) -> str:
        return str(self._data["description"])

    @property
    def author(self) -> str:
        return str(self._data["author"])

    @property
    def license(self) -> str:
        return str(self._data["license"])

    @property
    def inputs(self) -> dict[str, InputSpec]:
        """Inputs by name, in manifest order."""
        out = {}
        for name, spec in self._data["inputs"].items():
            directives = {
                k: v
                for k, v in spec.items()
                if k not in ("base", "optional", "description", "read-only")
            }
            out[name] = InputSpec(
                name=name,
                base=spec["base"],
                optional=bool(spec.get("optional", False)),
                description=str(spec.get("description", "")),
                read_only=bool(spec.get("read-only", False)),
                directives=copy.deepcopy(directives),
            )
        return out

    @property
    def config(self) -> dict[str, dict[str, Any]]:
        """Config specs by key (copies of the manifest's JSON-schema snippets)."""
        return copy.deepcopy(self._data["config"])

    @property
    def custom(self) -> dict[str, Any]:
        return copy.deepcopy(self._data.get("custom", {}))

    @property
    def image(self) -> str | None:
        """Container image: ``custom.gear-builder.image``, else ``custom.docker-image``."""
        custom = self._data.get("custom", {})
        builder = custom.get("gear-builder")
        if isinstance(builder, dict) and isinstance(builder.get("image"), str):
            return str(builder["image"])
        image = custom.get("docker-image")
        return image if isinstance(image, str) else None

    @property
    def command(self) -> str | None:
        """The manifest ``command`` (run through bash), or None to run ``/flywheel/v0/run``."""
        command = self._data.get("command")
        return command if isinstance(command, str) else None

    @property
    def environment(self) -> dict[str, str]:
        return dict(self._data.get("environment", {}))

    @property
    def capabilities(self) -> tuple[str, ...]:
        return tuple(self._data.get("capabilities", ()))

    @property
    def show_job(self) -> bool:
        """Whether ``custom.flywheel.show-job`` asks for ``job`` in config.json."""
        flywheel = self._data.get("custom", {}).get("flywheel")
        return isinstance(flywheel, dict) and flywheel.get("show-job") is True

    @property
    def extension(self) -> GearbrokerExtension:
        """The parsed ``custom.gearbroker`` block."""
        return self._extension

    @property
    def resources(self) -> Resources:
        return self._extension.resources

    @property
    def exit_codes(self) -> ExitCodeClasses:
        return self._extension.exit_codes

    @property
    def preferred_runtime(self) -> str | None:
        return self._extension.runtime

    @property
    def image_digest(self) -> str | None:
        return self._extension.image_digest

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifest) and other._data == self._data

    def __hash__(self) -> int:
        return hash(self.manifest_hash())

    def __repr__(self) -> str:
        return f"Manifest({self.name!r}, {self.version!r})"


def read_manifest_json(source: str | Path) -> tuple[object, str]:
    """Parse a manifest file (or ``<folder>/manifest.json``): (document, path shown)."""
    path = Path(source)
    if path.is_dir():
        path = path / MANIFEST_FILE
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError([Issue("$", f"cannot read file: {exc}")], source=str(path)) from exc
    try:
        return json.loads(text), str(path)
    except json.JSONDecodeError as exc:
        issue = Issue("$", f"not valid JSON: {exc}")
        raise ManifestError([issue], source=str(path)) from exc


def load_manifest(source: str | Path | Mapping[str, Any]) -> Manifest:
    """Read and validate a manifest; raises :class:`ManifestError` with every problem."""
    if isinstance(source, Mapping):
        doc: object = dict(source)
        shown = None
    else:
        doc, shown = read_manifest_json(source)
    check_manifest(doc, source=shown)
    assert isinstance(doc, dict)
    return Manifest(doc)
