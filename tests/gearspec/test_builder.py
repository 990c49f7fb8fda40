"""`gear create` and `gear config`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.cli.gear_commands import gear
from catalog.errors import InvalidInputError
from gearspec.builder import GearDraft, build_manifest, parse_config_spec, parse_input_spec
from gearspec.errors import InvocationError, ManifestError
from gearspec.manifest import load_manifest
from gearspec.staging import Destination, InputFile, stage_run

CREATE = [
    "create",
    "--name",
    "my-gear",
    "--label",
    "My gear",
    "--author",
    "Me",
    "--license",
    "Apache-2.0",
    "--image",
    "lab/my-gear:0.1.0",
    "--description",
    "Does it.",
    "--input",
    "dicom:dicom,nifti",
    "--optional-input",
    "mask",
    "--config",
    "threshold:number=0.5",
    "--config",
    "name:string?",
    "--config",
    "count:integer",
    "--config",
    "flags:array=a,b",
    "--non-interactive",
]


def test_create_non_interactive(tmp_path: Path) -> None:
    out = tmp_path / "g"
    result = CliRunner().invoke(gear, [*CREATE, "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out / "manifest.json")
    assert manifest.name == "my-gear" and manifest.license == "Apache-2.0"
    assert manifest.image == "lab/my-gear:0.1.0"
    assert manifest.inputs["dicom"].directives == {"type": {"enum": ["dicom", "nifti"]}}
    assert manifest.inputs["mask"].optional
    assert manifest.config["threshold"]["default"] == 0.5
    assert manifest.config["name"]["optional"] is True
    assert "default" not in manifest.config["count"] and "optional" not in manifest.config["count"]
    assert manifest.config["flags"]["default"] == ["a", "b"]
    assert os.access(out / "run", os.X_OK)
    assert (out / "Dockerfile").read_text().startswith("FROM python:3.11-slim\n")


def test_run_skeleton_reads_config_json(tmp_path: Path) -> None:
    out = tmp_path / "g"
    CliRunner().invoke(gear, [*CREATE, "--output-dir", str(out)])
    src = tmp_path / "scan.dcm"
    src.write_bytes(b"x")
    run = stage_run(
        load_manifest(out),
        {"count": 3},
        [InputFile("dicom", src, type="dicom")],
        Destination("session", "s1"),
        tmp_path / "run",
    )
    (run.run_dir / "run").write_text((out / "run").read_text())
    done = subprocess.run(
        [sys.executable, str(run.run_dir / "run")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert '"count": 3' in done.stdout
    assert "input dicom: /flywheel/v0/input/dicom/scan.dcm" in done.stdout


def test_create_interactive(tmp_path: Path) -> None:
    answers = (
        "\n".join(
            [
                "prompted-gear",
                "Prompted",
                "A gear.",
                "",
                "Someone",
                "MIT",
                "",
                "",
                "t1",
                "n",
                "nifti",
                "",  # one input, then finish
                "level",
                "integer",
                "3",
                "",  # one config key with default, then finish
            ]
        )
        + "\n"
    )
    out = tmp_path / "p"
    result = CliRunner().invoke(gear, ["create", "--output-dir", str(out)], input=answers)
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out)
    assert manifest.name == "prompted-gear" and manifest.version == "0.1.0"
    assert manifest.image == "prompted-gear:0.1.0"
    assert manifest.inputs["t1"].directives == {"type": {"enum": ["nifti"]}}
    assert manifest.config["level"] == {"type": "integer", "description": "", "default": 3}


def test_create_rejects_bad_values(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        gear,
        [
            "create",
            "--name",
            "Bad Name",
            "--author",
            "a",
            "--image",
            "x:1",
            "--non-interactive",
            "--output-dir",
            str(tmp_path),
        ],
    )
    assert isinstance(result.exception, ManifestError)
    assert "$.name" in str(result.exception)
    result = CliRunner().invoke(gear, ["create", "--name", "ok", "--non-interactive"])
    assert isinstance(result.exception, InvalidInputError)
    with pytest.raises(InvalidInputError):
        parse_config_spec("x:float")
    with pytest.raises(InvalidInputError):
        parse_config_spec("x:integer=abc")
    with pytest.raises(InvalidInputError):
        build_manifest(GearDraft(name="a", label="a", author="a", image="x\nRUN evil"))
    assert parse_input_spec("in").types == ()


def test_config_command(tmp_path: Path) -> None:
    out = tmp_path / "g"
    CliRunner().invoke(gear, [*CREATE, "--output-dir", str(out)])
    scan = tmp_path / "scan.dcm"
    scan.write_bytes(b"abc")
    target = tmp_path / "config.json"
    result = CliRunner().invoke(
        gear,
        [
            "config",
            str(out),
            "-i",
            f"dicom={scan}",
            "-c",
            "count=4",
            "-c",
            "name=$(reboot)",
            "-o",
            str(target),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(target.read_text())
    assert doc["config"] == {"threshold": 0.5, "name": "$(reboot)", "count": 4, "flags": ["a", "b"]}
    assert doc["inputs"]["dicom"]["location"]["path"] == "/flywheel/v0/input/dicom/scan.dcm"
    assert doc["inputs"]["dicom"]["object"]["type"] == "dicom"
    assert doc["destination"] == {"type": "analysis", "id": "local"}
    bad = CliRunner().invoke(
        gear,
        [
            "config",
            str(out),
            "-i",
            f"dicom={scan}",
            "-t",
            "dicom=csv",
            "-c",
            "count=x",
            "-o",
            str(target),
        ],
    )
    assert isinstance(bad.exception, InvocationError)
    missing = CliRunner().invoke(gear, ["config", str(out), "-o", str(target)])
    assert isinstance(missing.exception, InvocationError)
    assert "$.inputs.dicom: required input file is missing" in str(missing.exception)
