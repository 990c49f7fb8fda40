"""Gears bundled with gearbroker (their manifests are package data)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def example_gear(name: str) -> Path:
    """The folder of a bundled gear (holding its ``manifest.json``)."""
    return Path(str(resources.files("gearspec") / "examples" / name))
