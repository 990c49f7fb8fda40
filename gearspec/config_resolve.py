"""Resolving the config a gear runs with from the manifest and the user's values."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from gearspec.errors import InvocationError, Issue, child
from gearspec.manifest import Manifest
from gearspec.values import check_value


def config_defaults(manifest: Manifest) -> dict[str, Any]:
    """The manifest's default config values (keys without a default are left out)."""
    return {k: copy.deepcopy(s["default"]) for k, s in manifest.config.items() if "default" in s}


def check_config(
    manifest: Manifest, user_config: Mapping[str, Any]
) -> tuple[dict[str, Any], list[Issue]]:
    """The resolved config and every problem: unknown keys, missing required keys (no
    default, not optional) and values that break their spec, with paths ``$.config.<key>``."""
    specs = manifest.config
    issues = [
        Issue(child("$.config", key), "unknown config key")
        for key in user_config
        if key not in specs
    ]
    resolved: dict[str, Any] = {}
    for key, spec in specs.items():
        path = child("$.config", key)
        if key in user_config:
            value = user_config[key]
            issues.extend(check_value(spec, value, path))
            resolved[key] = copy.deepcopy(value)
        elif "default" in spec:
            resolved[key] = copy.deepcopy(spec["default"])
        elif spec.get("optional") is not True:
            issues.append(Issue(path, "required config value is missing (no default)"))
    return resolved, sorted(issues)


def resolve_config(manifest: Manifest, user_config: Mapping[str, Any]) -> dict[str, Any]:
    """The full config a gear runs with: user values checked, defaults filled in.

    Raises :class:`InvocationError` listing every problem found by :func:`check_config`.
    """
    resolved, issues = check_config(manifest, user_config)
    if issues:
        raise InvocationError(issues, source=f"config of gear {manifest.name}")
    return resolved
