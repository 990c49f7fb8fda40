"""The gear-run CLI end to end: gear install, run --wait, jobs, logs, render, provenance; demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.cli import main
from gearspec.examples import example_gear
from tests.broker.test_cli_catalog import Run
from tests.fixtures.gears import gear_manifest


@pytest.fixture
def gb_broker(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    bwrap_rootfs: Path,
) -> Run:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[catalog]\ndata_dir = "{tmp_path / "data"}"\n'
        '[broker]\nruntime = "bwrap"\npoll_interval = 0.2\n'
        f'[runtimes.bwrap.images]\n"localhost/gearbroker/busybox:1" = "{bwrap_rootfs}"\n'
    )
    monkeypatch.setenv("GEARBROKER_CONFIG", str(config))
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


def test_run_wait_and_inspect(gb_broker: Run, tmp_path: Path) -> None:
    gb = gb_broker
    assert gb("init")[0] == 0
    gear_dir = tmp_path / "gear"
    gear_dir.mkdir()
    (gear_dir / "manifest.json").write_text(json.dumps(gear_manifest()))
    code, out, _ = gb("gear", "install", str(gear_dir))
    assert code == 0 and "installed test-echo:1.0.0" in out
    assert "test-echo" in gb("gear", "list")[1]
    gb("group", "create", "lab")
    gb("project", "create", "lab/p")
    (tmp_path / "in.txt").write_text("data")
    gb("upload", str(tmp_path / "in.txt"), "--to", "lab/p/s1/e1/a1")
    src = "lab/p/s1/e1/a1/files/in.txt"
    code, out, _ = gb(
        "run", "test-echo", "-i", f"infile={src}", "-c", "message=hi there", "--dry-run"
    )
    assert code == 0 and "bwrap" in out and "--ro-bind" in out
    code, out, err = gb(
        "run", "test-echo", "-i", f"infile={src}", "-c", "message=hi there", "--wait"
    )
    assert code == 0, err
    assert "job 1 pending" in out and "job 1 complete" in out
    code, out, _ = gb("jobs", "list")
    assert code == 0 and "complete" in out and "test-echo" in out
    code, out, _ = gb("jobs", "show", "1")
    assert "pending   -> queued" in out and "result.txt" in out
    code, out, _ = gb("jobs", "logs", "1")
    assert "message: hi there" in out
    code, out, _ = gb("render", "1")
    assert code == 0 and "gb-job-1-1" in out
    analysis_files = json.loads(gb("jobs", "show", "1", "--json")[1])["provenance"]["outputs"]
    result = next(o["path"] for o in analysis_files if o["name"] == "result.txt")
    code, out, _ = gb("provenance", result)
    assert code == 0 and "made by job 1: test-echo:1.0.0" in out and src in out
    # a failing run exits non-zero with the reason
    code, out, err = gb("run", "test-echo", "-i", f"infile={src}", "-c", "exit_code=3", "--wait")
    assert code == 1 and "failed" in err and "exit code 3" in err
    # invalid config is refused before any job exists
    code, _, err = gb("run", "test-echo", "-i", f"infile={src}", "-c", "exit_code=many")
    assert code == 2 and "$.config.exit_code" in err
    code, out, _ = gb("jobs", "retry", "2")
    assert code == 0 and "attempt 2, retry of 2" in out
    assert gb("jobs", "cancel", "3")[1].startswith("job 3: cancelled")


def test_demo_runs_end_to_end(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    bwrap_rootfs: Path,
) -> None:
    monkeypatch.setenv("GEARBROKER_USER", "demo-user")
    main(
        [
            "demo",
            "--workdir",
            str(tmp_path / "demo"),
            "--subjects",
            "2",
            "--gear-rootfs",
            str(bwrap_rootfs.parent / "dcm2niix"),
        ]
    )
    out = capsys.readouterr().out
    assert "2 matching file(s)" in out
    assert "job 1: complete" in out
    assert "T1w_MPRAGE.nii.gz" in out and '"gear": "dcm2niix:' in out
    assert example_gear("dcm2niix").joinpath("manifest.json").exists()
