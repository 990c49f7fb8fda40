"""The catalog CLI end to end through ``broker.cli.main`` (exit codes and messages)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.cli import main

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def gb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    monkeypatch.setenv("GEARBROKER_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("GEARBROKER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GEARBROKER_USER", "alice")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_init_and_basic_workflow(gb: Run, tmp_path: Path) -> None:
    code, out, _ = gb("init")
    assert code == 0 and "admin:    alice" in out
    assert (tmp_path / "config.toml").exists()
    assert gb("group", "create", "lab")[0] == 0
    assert gb("project", "create", "lab/mri")[0] == 0
    src = tmp_path / "src" / "sub-1" / "ses-1" / "t1"
    src.mkdir(parents=True)
    (src / "a.nii.gz").write_bytes(b"nifti")
    code, out, _ = gb("upload", str(tmp_path / "src"), "--to", "lab/mri")
    assert code == 0 and "new       lab/mri/sub-1/ses-1/t1/files/a.nii.gz" in out
    code, out, _ = gb("ls", "lab/mri", "-d", "4")
    assert code == 0 and "sub-1/" in out and "a.nii.gz" in out
    assert (
        gb("info", "set", "lab/mri/sub-1", "age=42", "site.name=A B", "cmd=$(reboot); `x`")[0] == 0
    )
    code, out, _ = gb("info", "get", "lab/mri/sub-1")
    assert json.loads(out) == {"age": 42, "site": {"name": "A B"}, "cmd": "$(reboot); `x`"}
    assert gb("tag", "add", "lab/mri/sub-1/ses-1/t1/files/a.nii.gz", "qa")[1].strip() == "qa"
    dest = tmp_path / "dl"
    dest.mkdir()
    assert gb("download", "lab/mri/sub-1/ses-1/t1/files/a.nii.gz", str(dest))[0] == 0
    assert (dest / "a.nii.gz").read_bytes() == b"nifti"
    code, out, _ = gb("config", "show")
    assert "user.name" in out and "[GEARBROKER_USER]" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("ls", "lab/missing"), 3, "no project"),
        (("group", "create", "Bad Id"), 2, "invalid group id"),
        (("project", "create", "lab/mri"), 4, "already exists"),
        (("ls", "lab/p%zz"), 2, "bad escape"),
        (("rm", "lab/mri"), 4, "not empty"),
    ],
)
def test_errors_map_to_exit_codes(
    gb: Run, tmp_path: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    gb("init")
    gb("group", "create", "lab")
    gb("project", "create", "lab/mri")
    gb("info", "set", "lab/mri", "x=1")
    (tmp_path / "f.txt").write_text("x")
    gb("upload", str(tmp_path / "f.txt"), "--to", "lab/mri/s")
    got, _out, err = gb(*args)
    assert got == code
    assert err.startswith("error: ") and message in err


def test_read_only_user_cannot_write(
    gb: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gb("init")
    gb("group", "create", "lab")
    gb("project", "create", "lab/mri")
    gb("project", "permission", "add", "lab/mri", "bob", "ro")
    monkeypatch.setenv("GEARBROKER_USER", "bob")
    (tmp_path / "f.txt").write_text("x")
    code, _, err = gb("upload", str(tmp_path / "f.txt"), "--to", "lab/mri/s")
    assert code == 5 and "may not write" in err
    assert gb("ls", "lab/mri")[0] == 0


def test_uninitialised_catalog_says_what_to_do(gb: Run) -> None:
    code, _, err = gb("ls")
    assert code == 7 and "gearbroker init" in err


def test_console_script_is_installed(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("gearbroker")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "upload" in proc.stdout
