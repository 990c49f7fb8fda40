"""Ingest on a separately started Dask scheduler with two worker processes, and on Slurm."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog.catalog import Catalog
from ingest import report
from ingest.options import IngestOptions
from ingest.start import run_ingest, start_ingest
from tests.fixtures.engines import SlurmCluster
from tests.ingest.corpus import current_files, hazard_corpus, summary_counts


@pytest.fixture
def dask_scheduler(tmp_path: Path) -> Iterator[str]:
    """``tcp://`` address of a `dask scheduler` with two `dask worker` processes."""
    info = tmp_path / "scheduler.json"
    procs = [
        subprocess.Popen(
            ["dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(info)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    ["dask", "worker", "--scheduler-file", str(info), "--nthreads", "1",
                     "--no-dashboard"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        yield str(json.loads(info.read_text())["address"])
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ingest(
    cat: Catalog, store_url: str, root: Path, cluster: str, **kw: object
) -> dict[str, object]:
    run_id = start_ingest(
        cat, IngestOptions(kind="dicom", source=str(root), group="lab", project="p", shard_files=6)
    )
    run_ingest(cat, run_id, store_url=store_url, cluster=cluster, workers=2, **kw)  # type: ignore[arg-type]
    return report.summary(cat.db, run_id)


def test_ingest_on_an_external_scheduler(
    catalog: Catalog, store_url: str, tmp_path: Path, dask_scheduler: str
) -> None:
    catalog.create_group("lab")
    corpus = hazard_corpus(tmp_path / "src", sessions=1)
    summary = _ingest(catalog, store_url, corpus.root, dask_scheduler)
    assert summary_counts(summary) == {"stored": corpus.instances, "error": 2, "duplicate": 1}
    assert len(current_files(catalog)) == len(corpus.specs)


def test_ingest_on_slurm(
    catalog: Catalog, store_url: str, tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    catalog.create_group("lab")
    corpus = hazard_corpus(tmp_path / "src", sessions=1, series=1)
    section = {
        "scratch_root": str(tmp_path / "scratch"),
        "partition": slurm_cluster.default_partition,
        "dask_memory": "1GB",
        "dask_walltime": "00:10:00",
    }
    (tmp_path / "scratch").mkdir()
    summary = _ingest(catalog, store_url, corpus.root, "slurm", slurm_section=section)
    assert summary_counts(summary) == {"stored": corpus.instances, "error": 2, "duplicate": 1}
