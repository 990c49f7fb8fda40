"""Staging the run folder: exact config.json, layout, hostile names and values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gearspec.errors import InvocationError, StagingError
from gearspec.manifest import load_manifest
from gearspec.metadata import parse_metadata, scope_for
from gearspec.staging import (
    DEFAULT_PATH,
    Destination,
    Hierarchy,
    InputFile,
    build_config_json,
    gear_command,
    gear_environment,
    stage_run,
)
from tests.gearspec.helpers import load_json, minimal_manifest

HOSTILE = "$(touch /tmp/pwned-gearspec); `id`; rm -rf / ; echo ${HOME} | cat > x && 'q\""


@pytest.fixture
def dicom(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "scan.dcm"
    path.parent.mkdir()
    path.write_bytes(b"DICM" * 10)
    return path


def _dicom_input(path: Path, **kw: Any) -> InputFile:
    return InputFile(
        name="dicom",
        source_path=path,
        type="dicom",
        modality="MR",
        info={"PatientID": "P1"},
        tags=("raw",),
        classification={"Intent": ["Structural"]},
        file_id="f1",
        version=2,
        hierarchy=Hierarchy("acquisition", "acq1"),
        **kw,
    )


def test_stage_run_writes_exact_config_and_layout(tmp_path: Path, dicom: Path) -> None:
    manifest = load_manifest(minimal_manifest())
    run = stage_run(
        manifest,
        {"threshold": 0.25},
        [_dicom_input(dicom)],
        Destination("acquisition", "acq1"),
        tmp_path / "run",
    )
    expected = {
        "config": {"threshold": 0.25, "mode": "fast"},
        "inputs": {
            "dicom": {
                "base": "file",
                "hierarchy": {"type": "acquisition", "id": "acq1"},
                "location": {"path": "/flywheel/v0/input/dicom/scan.dcm", "name": "scan.dcm"},
                "object": {
                    "type": "dicom",
                    "mimetype": "application/octet-stream",
                    "modality": "MR",
                    "info": {"PatientID": "P1"},
                    "tags": ["raw"],
                    "classification": {"Intent": ["Structural"]},
                    "size": 40,
                    "file_id": "f1",
                    "version": 2,
                },
            }
        },
        "destination": {"type": "acquisition", "id": "acq1"},
    }
    assert json.loads(run.config_path.read_text()) == expected
    assert run.config == expected
    assert json.loads(run.manifest_path.read_text()) == manifest.to_dict()
    files = sorted(str(p.relative_to(run.run_dir)) for p in run.run_dir.rglob("*"))
    assert files == [
        "config.json",
        "input",
        "input/dicom",
        "input/dicom/scan.dcm",
        "manifest.json",
        "output",
        "work",
    ]
    staged = run.input_dir / "dicom" / "scan.dcm"
    assert staged.read_bytes() == dicom.read_bytes()
    assert os.stat(staged).st_ino == os.stat(dicom).st_ino  # hard link on one filesystem
    assert run.input_paths == {"dicom": staged}
    assert run.command == ["/flywheel/v0/run"]
    assert run.environment == {"PATH": DEFAULT_PATH}


def test_copy_mode_and_custom_file_name(tmp_path: Path, dicom: Path) -> None:
    manifest = load_manifest(minimal_manifest())
    run = stage_run(
        manifest,
        {},
        [_dicom_input(dicom, file_name="renamed file.dcm")],
        Destination("session", "s1"),
        tmp_path / "run",
        link=False,
    )
    staged = run.input_dir / "dicom" / "renamed file.dcm"
    assert staged.read_bytes() == dicom.read_bytes()
    assert os.stat(staged).st_ino != os.stat(dicom).st_ino
    assert run.config["inputs"]["dicom"]["location"] == {
        "path": "/flywheel/v0/input/dicom/renamed file.dcm",
        "name": "renamed file.dcm",
    }


def test_context_api_key_and_show_job(tmp_path: Path, dicom: Path) -> None:
    doc = minimal_manifest()
    doc["inputs"].update(
        lic={"base": "context"},
        other={"base": "context"},
        key={"base": "api-key", "read-only": True},
    )
    doc["custom"]["flywheel"] = {"show-job": True}
    manifest = load_manifest(doc)
    with pytest.raises(InvocationError, match=r"\$\.job"):
        build_config_json(manifest, {}, [_dicom_input(dicom)], Destination("analysis", "a1"))
    config = build_config_json(
        manifest,
        {},
        [_dicom_input(dicom)],
        Destination("analysis", "a1"),
        job={"id": "job-9"},
        contexts={"lic": "ABC"},
        api_key="k:1",
    )
    assert config["inputs"]["lic"] == {"base": "context", "found": True, "value": "ABC"}
    assert config["inputs"]["other"] == {"base": "context", "found": False}
    assert config["inputs"]["key"] == {"base": "api-key", "key": "k:1"}
    assert config["job"] == {"id": "job-9"}


def test_command_and_environment_from_manifest() -> None:
    doc = load_json("dcm2niix.json")
    manifest = load_manifest(doc)
    assert gear_command(manifest) == ["bash", "-c", "poetry run python run.py"]
    assert gear_environment(manifest, path="/bin") == doc["environment"]  # its PATH wins
    plain = load_manifest(minimal_manifest(environment={"A": "$(x)"}))
    assert gear_environment(plain, path="/bin") == {"PATH": "/bin", "A": "$(x)"}


@pytest.mark.parametrize(
    "bad_name",
    ["../escape.dcm", "/etc/passwd", "a/b.dcm", "..", ".", "nul\0byte.dcm", "x" * 256],
)
def test_hostile_file_names_are_rejected_before_anything_is_written(
    tmp_path: Path, dicom: Path, bad_name: str
) -> None:
    manifest = load_manifest(minimal_manifest())
    run_dir = tmp_path / "run"
    with pytest.raises(InvocationError) as caught:
        stage_run(
            manifest,
            {},
            [_dicom_input(dicom, file_name=bad_name)],
            Destination("acquisition", "a"),
            run_dir,
        )
    assert "$.inputs.dicom.location.name" in str(caught.value)
    assert not run_dir.exists()


def test_invocation_problems_are_reported_together(tmp_path: Path, dicom: Path) -> None:
    manifest = load_manifest(minimal_manifest())
    inputs = [
        InputFile(name="mask", source_path=tmp_path / "missing.nii"),
        InputFile(name="nope", source_path=dicom),
    ]
    with pytest.raises(InvocationError) as caught:
        stage_run(
            manifest,
            {"threshold": 2, "mode": "medium", "extra": 1},
            inputs,
            Destination("planet", "x"),
            tmp_path / "run",
        )
    paths = {i.path for i in caught.value.issues}
    assert paths == {
        "$.config.threshold",
        "$.config.mode",
        "$.config.extra",
        "$.inputs.mask",
        "$.inputs.nope",
        "$.inputs.dicom",
        "$.destination",
    }


def test_input_directives_type_name_size(tmp_path: Path, dicom: Path) -> None:
    manifest = load_manifest(load_json("example-gear.json"))
    text = tmp_path / "notes.csv"
    text.write_text("x" * 200_000)
    inputs = [
        InputFile(name="dicom", source_path=dicom, type="nifti"),
        InputFile(name="file", source_path=dicom),
        InputFile(name="text", source_path=text),
    ]
    with pytest.raises(InvocationError) as caught:
        build_config_json(manifest, {}, inputs, Destination("acquisition", "a"))
    paths = {i.path for i in caught.value.issues}
    assert paths == {"$.inputs.dicom.type", "$.inputs.text.name", "$.inputs.text.size"}


def test_run_dir_must_be_empty(tmp_path: Path, dicom: Path) -> None:
    manifest = load_manifest(minimal_manifest())
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old").write_text("x")
    with pytest.raises(StagingError):
        stage_run(
            manifest, {}, [_dicom_input(dicom)], Destination("acquisition", "a"), tmp_path / "run"
        )


def test_hostile_config_strings_stay_inert(tmp_path: Path, dicom: Path) -> None:
    manifest = load_manifest(minimal_manifest())
    run = stage_run(
        manifest,
        {"label": HOSTILE},
        [_dicom_input(dicom)],
        Destination("acquisition", "a"),
        tmp_path / "run",
    )
    assert json.loads(run.config_path.read_text())["config"]["label"] == HOSTILE
    assert all(HOSTILE not in arg for arg in run.command)
    assert all(HOSTILE not in value for value in run.environment.values())


TOOLKIT_GEAR = r'''#!/usr/bin/python3
"""A gear in the style of Flywheel's gear toolkit."""
import json, os
root = "/flywheel/v0"
with open(os.path.join(root, "config.json")) as f:
    cfg = json.load(f)
path = cfg["inputs"]["dicom"]["location"]["path"]
obj = cfg["inputs"]["dicom"]["object"]
with open(path, "rb") as f:
    data = f.read()
dest = cfg["destination"]
out = os.path.join(root, "output")
with open(os.path.join(out, "result.txt"), "w") as f:
    f.write(cfg["config"]["label"])
meta = {dest["type"]: {"info": {"size": len(data), "env": sorted(os.environ)},
                       "files": [{"name": "result.txt", "type": "text",
                                  "info": {"from": obj["file_id"]}}]},
        "acquisition": {"files": [{"name": cfg["inputs"]["dicom"]["location"]["name"],
                                   "classification": {"Intent": ["Localizer"]}}]}}
with open(os.path.join(out, ".metadata.json"), "w") as f:
    json.dump(meta, f)
os.makedirs(os.path.join(root, "work", "tmp"))
'''


@pytest.mark.skipif(
    shutil.which("bwrap") is None or not Path("/usr/bin/python3").exists(),
    reason="needs bubblewrap and /usr/bin/python3 to mount the run folder",
)
@pytest.mark.parametrize("command", [None, "/usr/bin/python3 /flywheel/v0/run"])
def test_toolkit_style_gear_finds_everything(
    tmp_path: Path, dicom: Path, command: str | None
) -> None:
    doc = minimal_manifest(environment={"GEAR_MODE": "test"})
    if command:
        doc["command"] = command
    manifest = load_manifest(doc)
    run = stage_run(
        manifest,
        {"label": HOSTILE},
        [_dicom_input(dicom)],
        Destination("analysis", "an1"),
        tmp_path / "run",
    )
    gear_file = run.run_dir / "run"
    gear_file.write_text(TOOLKIT_GEAR)
    gear_file.chmod(0o755)
    argv = [
        "bwrap",
        "--tmpfs",
        "/",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/bin",
        "/bin",
        "--bind",
        str(run.run_dir),
        "/flywheel/v0",
        "--chdir",
        "/flywheel/v0",
        "--unshare-all",
        "--die-with-parent",
        "--clearenv",
    ]
    for key, value in run.environment.items():
        argv += ["--setenv", key, value]
    done = subprocess.run([*argv, *run.command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (run.output_dir / "result.txt").read_text() == HOSTILE
    assert not Path("/tmp/pwned-gearspec").exists()
    assert (run.work_dir / "tmp").is_dir()
    scope = scope_for(
        Destination("analysis", "an1"),
        {"acquisition": "acq1", "session": "s1", "subject": "sub1", "project": "p1"},
        run.output_dir,
        [_dicom_input(dicom)],
    )
    metadata = json.loads((run.output_dir / ".metadata.json").read_text())
    changes = parse_metadata(metadata, scope)
    analysis = changes.for_level("analysis")
    assert analysis is not None and analysis.info is not None
    assert analysis.info["size"] == 40
    assert set(analysis.info["env"]) <= {"PATH", "GEAR_MODE", "PWD", "LC_CTYPE", "SHLVL", "_"}
    assert analysis.files[0].name == "result.txt" and analysis.files[0].is_output
    acquisition = changes.for_level("acquisition")
    assert acquisition is not None and acquisition.container_id == "acq1"
    assert acquisition.files[0].classification == {"Intent": ("Localizer",)}
