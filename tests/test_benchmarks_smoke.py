"""The benchmark scripts still run (tiny sizes), so they cannot rot unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_catalog_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "catalog.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "catalog.py"),
            "--rows",
            "2000",
            "--repeat",
            "3",
            "--dialects",
            "sqlite",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "bulk insert, rows/s" in proc.stdout
    results = json.loads(out.read_text())
    sqlite = results["dialects"]["sqlite"]
    assert sqlite["insert"]["ours_rows_per_s"] > 0
    assert set(sqlite["searches"]) == {"a", "b", "c", "d", "e"}
    assert all(s["rows"] > 0 for s in sqlite["searches"].values())
    assert sqlite["searches"]["e"]["rows"] == 2000  # the export takes every row of the project


def test_dispatch_local_benchmark_runs(tmp_path: Path, bwrap_rootfs: Path) -> None:
    out = tmp_path / "dispatch.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "dispatch_local.py"),
            "--runs",
            "5",
            "--rounds",
            "1",
            "--runtimes",
            "bwrap",
            "--rootfs",
            str(bwrap_rootfs),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "broker stages" in proc.stdout
    bwrap = json.loads(out.read_text())["results"]["bwrap"]
    assert bwrap["runs_per_round"] == 5
    assert bwrap["bare_ms_per_run"] > 0 and bwrap["broker_ms_per_job"] > 0
    ratio = bwrap["broker_ms_per_job"] / bwrap["bare_ms_per_run"]
    assert bwrap["ratio"] == pytest.approx(ratio)
    assert set(bwrap["stages_ms"]) == {
        "create",
        "claim->submitted",
        "submitted->started",
        "run",
        "exit->noticed",
        "finalize",
    }


def test_rules_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "rules.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "rules.py"),
            "--files",
            "200",
            "--round-files",
            "50",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ratio upload rules/plain" in proc.stdout
    results = json.loads(out.read_text())
    assert results["files"] == 200 and results["rounds"] == len(results["per_round"]) >= 2
    assert sum(r["files"] for r in results["per_round"]) == 200
    # 50 DICOM archives for the classifier, 50 T1w/T2w/bold NIfTIs for the QA rule
    assert results["checks"] == {
        "jobs": 100,
        "expected_jobs": 100,
        "rule_errors": 0,
        "triggers_left": 0,
    }
    assert results["totals"]["jobs"] == 100
    medians = results["medians"]
    assert medians["eval_ms_per_file"] > 0 and medians["fire_ms_per_job"] > 0
    assert medians["upload_ratio"] > 0 and medians["e2e_ratio"] > 0
