"""Every real manifest from Flywheel's exchange validates and its config resolves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from broker.cli.gear_commands import gear
from gearspec.config_resolve import resolve_config
from gearspec.manifest import load_manifest
from gearspec.validate import validate_manifest
from tests.gearspec.helpers import EXCHANGE

needs_exchange = pytest.mark.skipif(
    not EXCHANGE.is_dir(), reason=f"exchange manifests not present at {EXCHANGE}"
)
MANIFESTS = sorted(EXCHANGE.glob("*.json")) if EXCHANGE.is_dir() else []
SAMPLE = {"string": "x", "integer": 1, "number": 1.5, "boolean": True, "array": []}


@needs_exchange
def test_exchange_folder_has_all_77_gears() -> None:
    assert len(MANIFESTS) == 77


@needs_exchange
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: Path(p).stem)
def test_exchange_manifest_is_valid_and_defaults_resolve(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert validate_manifest(doc) == []
    manifest = load_manifest(path)
    required: dict[str, Any] = {
        key: SAMPLE[spec["type"]]
        for key, spec in manifest.config.items()
        if "default" not in spec and not spec.get("optional")
    }
    resolved = resolve_config(manifest, required)
    for key, spec in manifest.config.items():
        if "default" in spec:
            assert resolved[key] == spec["default"]


@needs_exchange
def test_cli_validate_accepts_whole_exchange_folder() -> None:
    result = CliRunner().invoke(gear, ["validate", str(EXCHANGE)])
    assert result.exit_code == 0, result.output
    assert "77 of 77 manifest(s) valid" in result.output
    assert "INVALID" not in result.output
