"""The ``gearbroker ingest`` commands: folder/dicom with -C, dry run, follow, report, list."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.cli import cli
from catalog.catalog import Catalog
from ingest import runs
from tests.ingest.corpus import hazard_corpus
from tests.ingest.test_ingest_resume import CLI, _env


@pytest.fixture
def env(catalog: Catalog, db_url: str, store_url: str, tmp_path: Path) -> dict[str, str]:
    catalog.create_group("lab")
    return _env(db_url, store_url, tmp_path)


def test_folder_ingest_with_config_file_and_reports(env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "src"
    for sub, name, text in [("a", "x.txt", "1"), ("a", "y.txt", "1"), ("b", "x.txt", "2")]:
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / name).write_text(text)
    config = tmp_path / "ingest.yaml"
    config.write_text(
        "template: '{subject}/*'\ndetect-duplicates: true\ncluster: threads\nworkers: 1\n"
        f"report-json: {tmp_path / 'r.json'}\nexclude: ['*.tmp']\n"
    )
    (root / "a" / "junk.tmp").write_text("skip me")
    runner = CliRunner()
    result = runner.invoke(
        cli, ["ingest", "folder", str(root), "lab", "proj", "-C", str(config)], env=env
    )
    assert result.exit_code == 0, result.output
    assert "status: duplicate 1, stored 2" in result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["state"] == "done" and data["counts"]["stored"]["files"] == 2
    assert data["problems"] == [
        {"path": "a/y.txt", "status": "duplicate", "reason": data["problems"][0]["reason"]}
    ]
    run_id = str(data["id"])
    as_csv = runner.invoke(cli, ["ingest", "report", run_id, "--format", "csv"], env=env)
    assert list(csv.reader(io.StringIO(as_csv.output)))[1][:2] == ["a/y.txt", "duplicate"]
    listed = runner.invoke(cli, ["ingest", "list"], env=env)
    assert f"{run_id:>5}  done" in listed.output and "[done] 3/3 files" in listed.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("no-such-option: 1\ntemplate: '{subject}/*'\n")
    failed = runner.invoke(
        cli, ["ingest", "folder", str(root), "lab", "proj", "-C", str(bad)], env=env
    )
    assert failed.exit_code != 0 and "unknown option 'no-such-option'" in str(failed.exception)


def test_dry_run_prints_plan(env: dict[str, str], tmp_path: Path) -> None:
    corpus = hazard_corpus(tmp_path / "src", sessions=1, series=1)
    result = CliRunner().invoke(
        cli,
        ["ingest", "dicom", str(corpus.root), "lab", "p", "--dry-run", "--cluster", "threads"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "P0001 / " in result.output and "[create subject, session, acquisition]" in result.output
    assert "plan: 17 files, 9 containers to create, 0 conflicts" in result.output
    assert "error     README.txt: not a DICOM file" in result.output


def test_follow_attaches_to_a_running_ingest(
    env: dict[str, str], catalog: Catalog, tmp_path: Path
) -> None:
    corpus = hazard_corpus(tmp_path / "src")
    proc = subprocess.Popen(
        [*CLI, "ingest", "dicom", str(corpus.root), "lab", "p", "--cluster", "local",
         "--workers", "1", "--shard-files", "2", "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not runs.list_runs(catalog.db, 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        run_id = runs.list_runs(catalog.db, 1)[0].id
        result = CliRunner().invoke(cli, ["ingest", "follow", str(run_id)], env=env)
    finally:
        proc.wait(timeout=120)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(f"ingest {run_id}: done")
    assert "files/s" in result.output
