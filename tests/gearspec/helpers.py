"""Shared test data for the gearspec tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data" / "gears"
EXCHANGE = Path(__file__).resolve().parents[3] / "shared" / "data" / "exchange-gears"


def load_json(name: str) -> dict[str, Any]:
    """A copy of a test manifest from tests/data/gears."""
    return copy.deepcopy(json.loads((DATA / name).read_text()))


def minimal_manifest(**overrides: Any) -> dict[str, Any]:
    """A small valid manifest with one file input and a few config keys."""
    doc: dict[str, Any] = {
        "name": "test-gear",
        "label": "Test gear",
        "description": "A gear for tests.",
        "version": "1.0.0",
        "author": "Tester",
        "license": "MIT",
        "url": "https://example.org/gear",
        "source": "",
        "inputs": {
            "dicom": {"base": "file", "type": {"enum": ["dicom"]}},
            "mask": {"base": "file", "optional": True},
        },
        "config": {
            "threshold": {"type": "number", "default": 0.5, "minimum": 0, "maximum": 1},
            "label": {"type": "string", "optional": True},
            "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
        },
        "custom": {"gear-builder": {"image": "example/test-gear:1.0.0"}},
    }
    doc.update(overrides)
    return doc
