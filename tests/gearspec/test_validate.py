"""Two-phase manifest validation: mutations, semantics, extensions, the CLI verdict."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from broker.cli.gear_commands import gear
from gearspec.errors import ManifestError, json_path
from gearspec.manifest import load_manifest
from gearspec.validate import validate_manifest
from tests.gearspec.helpers import DATA, load_json, minimal_manifest

VALID = [
    "example-gear.json",
    "dcm2niix.json",
    "fsl-stats.json",
    "petsurfer-coreg.json",
    "dicom-mr-classifier.json",
    "bids-fmriprep.json",
]

Mutation = Callable[[dict[str, Any]], str]


def _first(section: dict[str, Any], base: str | None = None) -> str:
    return next(k for k, v in section.items() if base is None or v.get("base") == base)


def drop_required(key: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> str:
        del doc[key]
        return f"$.{key}"

    return mutate


def bad_name(doc: dict[str, Any]) -> str:
    doc["name"] = "Not Valid!"
    return "$.name"


def long_name(doc: dict[str, Any]) -> str:
    doc["name"] = "a" * 101
    return "$.name"


def optional_with_default(doc: dict[str, Any]) -> str:
    key = next(k for k, v in doc["config"].items() if "default" in v)
    doc["config"][key]["optional"] = True
    return json_path(["config", key, "optional"])


def default_of_wrong_type(doc: dict[str, Any]) -> str:
    key = next(k for k, v in doc["config"].items() if "default" in v)
    spec = doc["config"][key]
    spec["default"] = {"nested": "object"}
    return json_path(["config", key, "default"])


def unknown_top_level(doc: dict[str, Any]) -> str:
    doc["threads"] = 4
    return "$.threads"


def bad_input_base(doc: dict[str, Any]) -> str:
    name = _first(doc["inputs"])
    doc["inputs"][name]["base"] = "directory"
    return json_path(["inputs", name, "base"])


def bad_license(doc: dict[str, Any]) -> str:
    doc["license"] = "WTFPL-9"
    return "$.license"


MUTATIONS: list[Mutation] = [
    *(
        drop_required(k)
        for k in (
            "name",
            "label",
            "description",
            "version",
            "author",
            "license",
            "source",
            "url",
            "inputs",
            "config",
        )
    ),
    bad_name,
    long_name,
    optional_with_default,
    default_of_wrong_type,
    unknown_top_level,
    bad_input_base,
    bad_license,
]


@pytest.mark.parametrize("name", VALID)
def test_test_manifests_are_valid(name: str) -> None:
    assert validate_manifest(load_json(name)) == []


@pytest.mark.parametrize("name", VALID)
@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: getattr(m, "__name__", "drop"))
def test_each_single_corruption_is_rejected_with_its_path(name: str, mutation: Mutation) -> None:
    doc = load_json(name)
    if mutation in (optional_with_default, default_of_wrong_type) and not any(
        "default" in v for v in doc["config"].values()
    ):
        doc["config"]["extra"] = {"type": "integer", "default": 1}
    expected_path = mutation(doc)
    issues = validate_manifest(doc)
    assert expected_path in {i.path for i in issues}, issues
    with pytest.raises(ManifestError) as caught:
        load_manifest(doc)
    assert expected_path in str(caught.value)


def test_all_problems_are_reported_together() -> None:
    doc = minimal_manifest(name="BAD", bogus=1)
    del doc["url"]
    doc["config"]["threshold"]["default"] = 7
    doc["config"]["label"]["default"] = "x"
    doc["inputs"]["dicom"]["base"] = "folder"
    paths = {i.path for i in validate_manifest(doc)}
    assert {
        "$.name",
        "$.bogus",
        "$.url",
        "$.config.threshold.default",
        "$.config.label.optional",
        "$.inputs.dicom.base",
    } <= paths


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["config"]["mode"].update(default="medium"), "$.config.mode.default"),
        (lambda d: d["config"]["mode"].update(enum=["fast", 3]), "$.config.mode.enum[1]"),
        (
            lambda d: d["config"].update(n={"type": "integer", "default": True}),
            "$.config.n.default",
        ),
        (lambda d: d["config"].update(n={"type": "integer", "default": 2.5}), "$.config.n.default"),
        (lambda d: d["config"].update(n={"type": "float"}), "$.config.n.type"),
        (lambda d: d["config"].update(n={"default": 1}), "$.config.n.type"),
        (lambda d: d["config"].update(n={"type": "string", "pattern": "("}), "$.config.n.pattern"),
        (
            lambda d: d["config"].update(n={"type": "number", "minimum": 5, "maximum": 1}),
            "$.config.n.minimum",
        ),
        (
            lambda d: d["config"].update(n={"type": "string", "items": {"type": "string"}}),
            "$.config.n.items",
        ),
        (
            lambda d: d["config"].update(
                n={"type": "array", "items": {"type": "integer"}, "default": [1, "two"]}
            ),
            "$.config.n.default[1]",
        ),
        (lambda d: d.update(capabilities=["networking", "quantum"]), "$.capabilities[1]"),
        (lambda d: d.update(command="  "), "$.command"),
        (lambda d: d.update(command="run\0me"), "$.command"),
        (lambda d: d.update(environment={"BAD NAME": "x"}), '$.environment["BAD NAME"]'),
        (lambda d: d.update(environment={"N": 3}), "$.environment.N"),
        (lambda d: d["inputs"].update({"../up": {"base": "file"}}), '$.inputs["../up"]'),
        (
            lambda d: d["inputs"].update(k={"base": "api-key", "optional": True}),
            "$.inputs.k.optional",
        ),
        (lambda d: d["inputs"].update(c={"base": "context", "type": {}}), "$.inputs.c.type"),
        (lambda d: d["inputs"]["dicom"].update(name="*.dcm"), "$.inputs.dicom.name"),
        (lambda d: d["inputs"]["dicom"].update(type={"enum": 5}), "$.inputs.dicom.type"),
        (lambda d: d.update(url="not a uri"), "$.url"),
        (
            lambda d: d.update(output_configuration={"enforce_file_version_match": "yes"}),
            "$.output_configuration.enforce_file_version_match",
        ),
        (lambda d: d["custom"]["gear-builder"].update(image=""), "$.custom.gear-builder.image"),
    ],
)
def test_semantic_and_schema_checks(mutate: Callable[[dict[str, Any]], object], path: str) -> None:
    doc = minimal_manifest()
    mutate(doc)
    assert path in {i.path for i in validate_manifest(doc)}


def test_flywheel_v030_features_are_accepted() -> None:
    doc = minimal_manifest(
        output_configuration={"enforce_file_version_match": True},
        capabilities=["networking"],
        command="python run.py --fast",
        environment={"FLYWHEEL": "/flywheel/v0"},
        maintainer="M",
        cite="A paper",
        flywheel="0",
    )
    doc["config"]["coords"] = {
        "type": "array",
        "items": {"type": "number"},
        "minItems": 1,
        "maxItems": 3,
        "default": [1, 2.5],
    }
    doc["config"]["pct"] = {
        "type": "number",
        "maximum": 100,
        "exclusiveMaximum": True,
        "default": 99,
    }
    doc["inputs"]["ctx"] = {"base": "context"}
    doc["inputs"]["key"] = {"base": "api-key", "read-only": True}
    assert validate_manifest(doc) == []


GOOD_EXTENSION = {
    "resources": {"cpus": 2, "memory": "8G", "gpus": 1, "walltime": "1-02:00:00", "disk": 1024},
    "exit-codes": {"transient": [75, 137], "permanent": [1], "bad-input": [2]},
    "runtime": "podman",
    "image-digest": "sha256:" + "a" * 64,
}


def test_gearbroker_extension_is_parsed() -> None:
    doc = minimal_manifest()
    doc["custom"]["gearbroker"] = GOOD_EXTENSION
    manifest = load_manifest(doc)
    assert manifest.resources.cpus == 2.0
    assert manifest.resources.memory_bytes == 8 * 1024**3
    assert manifest.resources.walltime_seconds == 26 * 3600
    assert manifest.resources.disk_bytes == 1024
    assert manifest.resources.gpus == 1
    assert manifest.preferred_runtime == "podman"
    assert manifest.image_digest == "sha256:" + "a" * 64
    assert manifest.exit_codes.classify(75).value == "transient"
    assert manifest.exit_codes.classify(2).value == "bad-input"
    assert manifest.exit_codes.classify(0).value == "success"
    assert manifest.exit_codes.classify(9).value == "unclassified"


@pytest.mark.parametrize(
    ("block", "path"),
    [
        ({"resources": {"memory": "lots"}}, "$.custom.gearbroker.resources.memory"),
        ({"resources": {"memory": "0M"}}, "$.custom.gearbroker.resources.memory"),
        ({"resources": {"cpus": 0}}, "$.custom.gearbroker.resources.cpus"),
        ({"resources": {"gpus": -1}}, "$.custom.gearbroker.resources.gpus"),
        ({"resources": {"walltime": "0s"}}, "$.custom.gearbroker.resources.walltime"),
        ({"resources": {"walltime": "soon"}}, "$.custom.gearbroker.resources.walltime"),
        ({"resources": {"ram": 4}}, "$.custom.gearbroker.resources.ram"),
        ({"exit-codes": {"transient": [0]}}, "$.custom.gearbroker.exit-codes.transient[0]"),
        (
            {"exit-codes": {"transient": [3], "permanent": [3]}},
            "$.custom.gearbroker.exit-codes.permanent[0]",
        ),
        ({"exit-codes": {"fatal": [3]}}, "$.custom.gearbroker.exit-codes.fatal"),
        ({"runtime": "lxc"}, "$.custom.gearbroker.runtime"),
        ({"image-digest": "md5:abc"}, "$.custom.gearbroker.image-digest"),
        ({"color": "red"}, "$.custom.gearbroker.color"),
    ],
)
def test_bad_extension_is_rejected_with_path(block: dict[str, Any], path: str) -> None:
    doc = minimal_manifest()
    doc["custom"]["gearbroker"] = block
    assert path in {i.path for i in validate_manifest(doc)}


def test_load_manifest_reports_bad_json_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "absent.json")
    assert [str(i) for i in validate_manifest(["a list"])] == [
        "$: ['a list'] is not of type 'object'"
    ]


def test_cli_validate_prints_verdicts_and_fails(tmp_path: Path) -> None:
    good = DATA / "example-gear.json"
    broken = minimal_manifest(name="Bad Name")
    del broken["license"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    result = CliRunner().invoke(gear, ["validate", str(good), str(bad)])
    assert result.exit_code != 0
    assert isinstance(result.exception, ManifestError)
    assert f"VALID    {good}: flywheel-example-gear 0.0.4" in result.output
    assert f"INVALID  {bad}: 2 problem(s)" in result.output
    assert "    $.license: required key is missing" in result.output
    assert "    $.name: 'Bad Name' does not match" in result.output
    assert "1 of 2 manifest(s) valid" in result.output
