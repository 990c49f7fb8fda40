"""The benchmark scripts still run (tiny sizes), so they cannot rot unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
