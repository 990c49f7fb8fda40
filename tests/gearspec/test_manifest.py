"""The typed Manifest wrapper."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from gearspec.manifest import canonical_json, load_manifest
from tests.gearspec.helpers import DATA, load_json, minimal_manifest


def test_properties() -> None:
    manifest = load_manifest(DATA / "bids-fmriprep.json")
    doc = load_json("bids-fmriprep.json")
    assert (manifest.name, manifest.version, manifest.label) == (
        doc["name"],
        doc["version"],
        doc["label"],
    )
    assert manifest.image == doc["custom"]["gear-builder"]["image"]
    assert manifest.command == "/flywheel/v0/run.sh"
    assert manifest.environment == doc["environment"]
    assert manifest.inputs["key"].base == "api-key" and manifest.inputs["key"].read_only
    assert manifest.inputs["bidsignore"].optional
    assert manifest.config == doc["config"]
    assert manifest.resources.cpus is None and manifest.resources.gpus == 0
    assert not manifest.show_job


def test_image_falls_back_to_docker_image_and_directives() -> None:
    manifest = load_manifest(DATA / "example-gear.json")
    assert manifest.image == "flywheel/example-gear:0.0.4"
    assert manifest.inputs["text"].directives == {
        "name": {"pattern": "^.*.txt$"},
        "size": {"maximum": 100000},
    }
    assert manifest.command is None


def test_manifest_hash_is_canonical(tmp_path: Path) -> None:
    doc = minimal_manifest()
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(doc, indent=4))
    a, b = load_manifest(path), load_manifest(tmp_path)
    expected = hashlib.sha256(
        json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert a.manifest_hash() == b.manifest_hash() == expected
    assert a == b and hash(a) == hash(b)
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    changed = load_manifest(minimal_manifest(version="2"))
    assert changed.manifest_hash() != a.manifest_hash()


def test_manifest_is_a_copy() -> None:
    doc = minimal_manifest()
    manifest = load_manifest(doc)
    doc["name"] = "changed"
    manifest.to_dict()["name"] = "changed too"
    manifest.config["threshold"]["default"] = 9
    assert manifest.name == "test-gear"
    assert manifest.config["threshold"]["default"] == 0.5
