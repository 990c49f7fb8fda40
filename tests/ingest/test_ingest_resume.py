"""Kill -9 a real ingest process in the middle (twice: while scanning, while packing), resume
it, and check the catalog holds every expected file exactly once; re-runs change nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from sqlalchemy import func, select

from catalog.catalog import Catalog
from catalog.models import File, IngestItem
from ingest import runs
from ingest.synthetic import corpus_series, write_corpus
from tests.ingest.corpus import blob, zip_members

SUBJECTS, SESSIONS, SERIES, SLICES = 20, 2, 5, 10  # 2,000 files
CLI = [sys.executable, "-c", "from broker.cli import main; main()"]


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, corpus_series(SUBJECTS, SESSIONS, SERIES, slices=SLICES, size=16))
    return root


def _env(db_url: str, store_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "GEARBROKER_DATABASE": db_url,
        "GEARBROKER_STORE": store_url,
        "GEARBROKER_USER": "admin",
        "GEARBROKER_CONFIG": str(tmp_path / "absent.toml"),
    }


def _kill_when(proc: subprocess.Popen[bytes], cat: Catalog, ready: str, at: int) -> int:
    """SIGKILL ``proc`` (and its Dask workers) once its run's ``stats[ready] >= at``."""
    deadline = time.monotonic() + 120
    run_id = None
    while time.monotonic() < deadline and proc.poll() is None:
        listed = runs.list_runs(cat.db, 1)
        if listed and listed[0].state == runs.RUNNING:
            run_id = listed[0].id
            if int(listed[0].stats.get(ready, 0)) >= at:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"the ingest ended before it could be killed: {proc.stderr}"
    children = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    assert run_id is not None
    return run_id


def test_kill_9_and_resume_loses_and_duplicates_nothing(
    catalog: Catalog, db_url: str, store_url: str, big_corpus: Path, tmp_path: Path
) -> None:
    catalog.create_group("lab")
    env = _env(db_url, store_url, tmp_path)
    total = SUBJECTS * SESSIONS * SERIES * SLICES
    args = ["ingest", "dicom", str(big_corpus), "lab", "big", "--cluster", "local",
            "--workers", "2", "--shard-files", "40", "--batch-files", "120", "--no-progress"]  # fmt: skip
    first = subprocess.Popen([*CLI, *args], env=env, stderr=subprocess.DEVNULL)
    run_id = _kill_when(first, catalog, "scanned", total // 3)
    run = runs.load_run(catalog.db, run_id)
    assert run.state == runs.RUNNING and run.stats["phase"] == "scan"
    assert not runs.driver_alive(run.stats)

    resume = [*CLI, "ingest", "resume", str(run_id), "--cluster", "local", "--workers", "2",
              "--no-progress"]  # fmt: skip
    second = subprocess.Popen(resume, env=env, stderr=subprocess.DEVNULL)
    _kill_when(second, catalog, "packed", 10)
    assert runs.load_run(catalog.db, run_id).stats["phase"] == "pack"

    done = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert runs.load_run(catalog.db, run_id).state == runs.DONE
    _check_exactly_once(catalog, run_id, total)
    before = _files(catalog)

    again = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"unchanged {total:,}" in again.stdout
    twice = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=60)
    assert twice.returncode == 4 and "nothing to resume" in twice.stderr
    assert _files(catalog) == before


def _files(cat: Catalog) -> list[tuple[int, str, str, int, bool]]:
    with cat.db.session(readonly=True) as session:
        rows = session.execute(
            select(File.id, File.name, File.sha256, File.version, File.current).order_by(File.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def _check_exactly_once(cat: Catalog, run_id: int, total: int) -> None:
    files = _files(cat)
    assert len(files) == SUBJECTS * SESSIONS * SERIES and all(f[3] == 1 for f in files)
    members: Counter[str] = Counter()
    for _id, _name, sha, _version, _current in files:
        names = list(zip_members(blob(cat, sha)))
        assert len(names) == SLICES
        members.update(names)
    assert len(members) == total and set(members.values()) == {1}
    with cat.db.session(readonly=True) as session:
        keys = session.execute(
            select(IngestItem.status, func.count(), func.count(func.distinct(IngestItem.key)))
            .where(IngestItem.run_id == run_id)
            .group_by(IngestItem.status)
        ).all()
    assert [tuple(k) for k in keys] == [("stored", total, total)]
