"""benchmarks/dispatch_k8s.py still runs (three jobs), so it cannot rot unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.engines import ContainerEngine

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.podman
def test_dispatch_k8s_benchmark_runs(podman_engine: ContainerEngine, tmp_path: Path) -> None:
    out = tmp_path / "k8s.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dispatch_k8s.py"), "--jobs", "3",
         "--poll", "0.2", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=dict(podman_engine.env),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "api_requests_per_job" in proc.stdout
    results = json.loads(out.read_text())
    assert results["jobs"] == 3
    assert results["api_requests_by_verb"]["create jobs"] == 3
    assert 0 < results["broker_cpu_s_per_job"] < 1
