"""Two-phase manifest validation: the JSON Schema, then semantic checks.

Both phases always run (the semantic checks skip parts too malformed to judge), so one
call reports every problem, each with its JSON path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft4Validator, Draft7Validator
from jsonschema.exceptions import SchemaError

from gearspec.errors import Issue, ManifestError, child
from gearspec.extensions import extension_issues
from gearspec.schema import KNOWN_CAPABILITIES, LICENSES, schema_issues
from gearspec.values import check_value, type_matches

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LENGTH_PAIRS = (("minimum", "maximum"), ("minLength", "maxLength"), ("minItems", "maxItems"))


def validate_manifest(doc: object) -> list[Issue]:
    """Every problem of a manifest document (schema first, then semantics), sorted by path."""
    issues = schema_issues(doc)
    if isinstance(doc, dict):
        issues.extend(semantic_issues(doc))
    return sorted(set(issues))


def check_manifest(doc: object, source: str | None = None) -> None:
    """Raise :class:`ManifestError` listing every problem unless ``doc`` is valid."""
    issues = validate_manifest(doc)
    if issues:
        raise ManifestError(issues, source=source)


def semantic_issues(doc: Mapping[str, Any]) -> list[Issue]:
    """Checks the JSON Schema cannot express; tolerant of a structurally broken document."""
    issues: list[Issue] = []
    license_id = doc.get("license")
    if isinstance(license_id, str) and license_id not in LICENSES:
        issues.append(Issue("$.license", f"{license_id!r} is not an SPDX id Flywheel accepts"))
    issues.extend(_capability_issues(doc.get("capabilities")))
    issues.extend(_command_issues(doc))
    inputs = doc.get("inputs")
    if isinstance(inputs, dict):
        for name, spec in inputs.items():
            issues.extend(_input_issues(name, spec))
    config = doc.get("config")
    if isinstance(config, dict):
        for key, spec in config.items():
            if isinstance(spec, dict):
                issues.extend(_config_issues(child("$.config", key), spec))
    issues.extend(extension_issues(doc.get("custom")))
    issues.extend(_custom_issues(doc.get("custom")))
    return issues


def _capability_issues(capabilities: object) -> list[Issue]:
    if not isinstance(capabilities, list):
        return []
    issues = []
    for index, cap in enumerate(capabilities):
        path = child("$.capabilities", index)
        if isinstance(cap, str) and cap not in KNOWN_CAPABILITIES:
            known = ", ".join(sorted(KNOWN_CAPABILITIES))
            issues.append(Issue(path, f"unknown capability {cap!r} (known: {known})"))
        elif cap in capabilities[:index]:
            issues.append(Issue(path, f"capability {cap!r} listed twice"))
    return issues


def _command_issues(doc: Mapping[str, Any]) -> list[Issue]:
    issues = []
    command = doc.get("command")
    if isinstance(command, str):
        if not command.strip():
            issues.append(Issue("$.command", "command is empty; omit it to run /flywheel/v0/run"))
        if "\0" in command:
            issues.append(Issue("$.command", "command contains a NUL byte"))
    environment = doc.get("environment")
    if isinstance(environment, dict):
        for key, value in environment.items():
            path = child("$.environment", key)
            if not _ENV_NAME.match(key):
                issues.append(Issue(path, f"{key!r} is not a valid environment variable name"))
            if isinstance(value, str) and "\0" in value:
                issues.append(Issue(path, "value contains a NUL byte"))
    return issues


def _input_issues(name: str, spec: object) -> list[Issue]:
    path = child("$.inputs", name)
    issues = []
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        issues.append(Issue(path, "input name must be usable as a folder name (no '/', NUL)"))
    if not isinstance(spec, dict) or spec.get("base") != "file":
        return issues
    for key, directive in spec.items():
        if key in ("base", "optional", "description") or not isinstance(directive, dict):
            continue
        problem = _schema_problem(directive)
        if problem:
            issues.append(Issue(child(path, key), f"not a valid JSON-schema directive: {problem}"))
    return issues


def _schema_problem(directive: Mapping[str, Any]) -> str | None:
    """None when ``directive`` is a valid draft-04 or draft-07 schema, else the reason."""
    try:
        Draft4Validator.check_schema(directive)
        return None
    except SchemaError:
        pass
    try:
        Draft7Validator.check_schema(directive)
        return None
    except SchemaError as exc:
        return str(exc.message)


def _config_issues(path: str, spec: Mapping[str, Any]) -> list[Issue]:
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in ("string", "integer", "number", "boolean", "array"):
        return []  # reported by the schema phase
    issues = []
    if "optional" in spec and "default" in spec:
        issues.append(
            Issue(child(path, "optional"), "a config key cannot have both a default and 'optional'")
        )
    if "items" in spec and kind != "array":
        issues.append(Issue(child(path, "items"), "'items' only applies to type array"))
    items = spec.get("items")
    if kind == "array" and isinstance(items, dict):
        issues.extend(_bounds_issues(child(path, "items"), items))
        for index, value in enumerate(items.get("enum") or []):
            if "type" in items and not type_matches(items["type"], value):
                where = child(path, "items", "enum", index)
                issues.append(Issue(where, f"{value!r} is not of type {items['type']}"))
    issues.extend(_bounds_issues(path, spec))
    enum = spec.get("enum")
    if isinstance(enum, list):
        for index, value in enumerate(enum):
            if not type_matches(kind, value):
                issues.append(Issue(child(path, "enum", index), f"{value!r} is not of type {kind}"))
    if "default" in spec:
        issues.extend(check_value(spec, spec["default"], child(path, "default")))
    return issues


def _bounds_issues(path: str, spec: Mapping[str, Any]) -> list[Issue]:
    issues = []
    for low_key, high_key in _LENGTH_PAIRS:
        low, high = spec.get(low_key), spec.get(high_key)
        numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (low, high))
        if numbers and low > high:  # type: ignore[operator]
            issues.append(Issue(child(path, low_key), f"{low_key} {low} > {high_key} {high}"))
    pattern = spec.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error as exc:
            issues.append(Issue(child(path, "pattern"), f"pattern does not compile: {exc}"))
    return issues


def _custom_issues(custom: object) -> list[Issue]:
    if not isinstance(custom, dict):
        return []
    issues = []
    builder = custom.get("gear-builder")
    if isinstance(builder, dict) and "image" in builder and not _nonempty(builder["image"]):
        issues.append(Issue("$.custom.gear-builder.image", "image must be a non-empty string"))
    if "docker-image" in custom and not _nonempty(custom["docker-image"]):
        issues.append(Issue("$.custom.docker-image", "image must be a non-empty string"))
    flywheel = custom.get("flywheel")
    if isinstance(flywheel, dict) and not isinstance(flywheel.get("show-job", False), bool):
        issues.append(Issue("$.custom.flywheel.show-job", "show-job must be a boolean"))
    return issues


def _nonempty(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())
