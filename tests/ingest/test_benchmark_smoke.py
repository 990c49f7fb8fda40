"""The ingest benchmark still runs (tiny corpus, local source, no Orthanc)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ingest_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "ingest.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ingest.py"), "--files", "80", "--subjects",
         "4", "--size", "32", "--workers", "1", "--sources", "local", "--modes", "pack",
         "--no-orthanc", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "parse+hash limit" in proc.stdout and "ingest local (pack)" in proc.stdout
    assert "store ceiling" in proc.stdout
    results = json.loads(out.read_text())
    assert results["ingest_local_pack"]["counts"] == {"stored": [80, results["bytes"]]}
    assert results["ingest_local_pack"]["files_per_s"] > 0
    assert results["store_ceiling"]["files_per_s"] > 0
