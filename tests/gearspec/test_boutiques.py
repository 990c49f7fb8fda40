"""Boutiques descriptors converted into gears, and the generated run wrapper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.cli.gear_commands import gear
from gearspec.boutiques import import_boutiques, load_boutiques
from gearspec.errors import BoutiquesError
from gearspec.manifest import load_manifest
from gearspec.staging import Destination, InputFile, stage_run
from tests.gearspec.helpers import DATA, load_json

DESCRIPTOR = DATA / "boutiques-tool.json"
HOSTILE = "$(touch pwned); `id` ; echo ${HOME} > x"


def test_conversion() -> None:
    result = load_boutiques(DESCRIPTOR)
    manifest = load_manifest(result.manifest)
    assert manifest.name == "brain-tool"
    assert manifest.label == "Brain Tool"
    assert manifest.version == "2.1"
    assert manifest.license == "Other"
    assert manifest.image == "quay.io/lab/braintool:2.1"
    assert manifest.inputs["input"].base == "file" and not manifest.inputs["input"].optional
    assert manifest.inputs["masks"].optional
    assert manifest.config["output_prefix"]["default"] == "brain"
    assert manifest.config["threshold"] == {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "exclusiveMaximum": True,
        "description": "Threshold",
        "optional": True,
    }
    assert manifest.config["verbose"]["default"] is False
    assert manifest.config["labels"]["type"] == "array"
    assert manifest.config["labels"]["items"] == {"type": "integer"}
    assert manifest.config["labels"]["minItems"] == 1
    assert manifest.config["mode"]["enum"] == ["fast", "accurate"]
    assert manifest.resources.cpus == 2
    assert manifest.resources.memory_bytes == 4 * 1024**3
    assert manifest.resources.walltime_seconds == 3600
    notes = "\n".join(result.unsupported)
    for expected in (
        "input masks: a list of files",
        "input labels: requires-inputs",
        "output-files",
        "container-image.container-opts",
        "license",
    ):
        assert expected in notes


def test_shell_syntax_is_reported() -> None:
    doc = load_json("boutiques-tool.json")
    doc["command-line"] = "braintool [INPUT] | gzip > out.gz && echo done"
    notes = "\n".join(import_boutiques(doc).unsupported)
    assert "shell syntax ['&&', '>', '|']" in notes


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.pop("command-line"), "$.command-line"),
        (lambda d: d["inputs"][0].update(id="bad id"), "$.inputs[0].id"),
        (lambda d: d["inputs"][1].update(id="input"), "$.inputs[1].id"),
        (lambda d: d["inputs"][0].update(type="Directory"), "$.inputs[0].type"),
        (lambda d: d["inputs"][3].pop("command-line-flag"), "$.inputs[3].command-line-flag"),
        (lambda d: d["inputs"][5].update({"default-value": 3}), "$.config.mode.default"),
    ],
)
def test_bad_descriptors_are_rejected(mutate: object, path: str) -> None:
    doc = load_json("boutiques-tool.json")
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(BoutiquesError) as caught:
        import_boutiques(doc)
    assert path in {i.path for i in caught.value.issues}


def _run_wrapper(tmp_path: Path, config: dict[str, object], with_mask: bool = False) -> list[str]:
    result = load_boutiques(DESCRIPTOR)
    manifest = load_manifest(result.manifest)
    src = tmp_path / "head.nii.gz"
    src.write_bytes(b"nifti")
    run = stage_run(
        manifest,
        config,
        [InputFile(name="input", source_path=src)],
        Destination("analysis", "a1"),
        tmp_path / "run",
    )
    (run.run_dir / "run").write_text(result.run_script)
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "braintool"
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        "open('argv.json', 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    fake.chmod(0o755)
    env = {"PATH": f"{tools}:{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, str(run.run_dir / "run")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "pwned").exists() and not (run.output_dir / "pwned").exists()
    argv: list[str] = json.loads((run.output_dir / "argv.json").read_text())
    return argv


def test_wrapper_builds_argv_without_a_shell(tmp_path: Path) -> None:
    argv = _run_wrapper(
        tmp_path, {"output_prefix": HOSTILE, "threshold": 0.5, "verbose": True, "labels": [1, 2]}
    )
    assert argv == [
        "-i",
        "/flywheel/v0/input/input/head.nii.gz",
        "-o",
        HOSTILE,
        "-f=0.5",
        "-v",
        "-l",
        "1",
        "2",
        "--mode=fast",
    ]


def test_wrapper_drops_absent_optional_values(tmp_path: Path) -> None:
    argv = _run_wrapper(tmp_path, {"mode": "accurate"})
    assert argv == ["-i", "/flywheel/v0/input/input/head.nii.gz", "-o", "brain", "--mode=accurate"]


def test_cli_import_boutiques(tmp_path: Path) -> None:
    out = tmp_path / "gear"
    result = CliRunner().invoke(
        gear, ["import-boutiques", str(DESCRIPTOR), "--output-dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Could not be expressed in the gear:" in result.output
    assert "  - input masks: a list of files became a single file input" in result.output
    assert load_manifest(out).name == "brain-tool"
    assert os.access(out / "run", os.X_OK)
    again = CliRunner().invoke(
        gear, ["import-boutiques", str(DESCRIPTOR), "--output-dir", str(out)]
    )
    assert again.exit_code != 0 and "already exist" in str(again.exception)
