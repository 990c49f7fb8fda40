"""Faults that need real processes: concurrent writers and an upload killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from catalog import db as catalog_db
from catalog.catalog import Catalog
from catalog.errors import DatabaseError
from catalog.gc import collect_garbage
from catalog.models import File

UPLOADER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from catalog.catalog import Catalog
    db, store, src, dest = sys.argv[1:5]
    cat = Catalog.open(db, store, "admin")
    cat.upload([Path(src)], dest)
    """
)


def _tree(root: Path, subjects: int, files: int, tag: str) -> Path:
    for s in range(subjects):
        folder = root / f"sub-{s:02d}" / "ses-1" / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(files):
            (folder / f"{tag}-{i:04d}.dat").write_bytes(f"{tag}{s}{i}".encode() * 50)
    return root


def _uploader(db_url: str, store_url: str, src: Path, dest: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", UPLOADER, db_url, store_url, str(src), dest],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_two_concurrent_uploaders(
    catalog: Catalog, db_url: str, store_url: str, tmp_path: Path
) -> None:
    """Both writers race to create the same subjects; both succeed, nothing is lost."""
    catalog.create_group("lab")
    catalog.create_project("lab", "p")
    a = _tree(tmp_path / "a", subjects=6, files=60, tag="a")
    b = _tree(tmp_path / "b", subjects=6, files=60, tag="b")
    procs = [_uploader(db_url, store_url, src, "lab/p") for src in (a, b)]
    for proc in procs:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    with catalog.db.session(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(File)) == 2 * 6 * 60
    assert len(catalog.tree("lab/p")) == 6


def test_upload_killed_with_sigkill_leaves_no_orphan_row(
    catalog: Catalog, db_url: str, store_url: str, tmp_path: Path
) -> None:
    catalog.create_group("lab")
    catalog.create_project("lab", "p")
    src = _tree(tmp_path / "src", subjects=4, files=500, tag="k")
    proc = _uploader(db_url, store_url, src, "lab/p")
    deadline = time.monotonic() + 120
    blobs_dir = Path(store_url)
    # kill once blobs are being written (mid-batch), before the upload can finish
    while time.monotonic() < deadline and proc.poll() is None:
        if sum(1 for _ in blobs_dir.rglob("*")) > 250:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "upload finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with catalog.db.session(readonly=True) as s:
        rows = list(s.scalars(select(File)))
    # every committed row points at a durable blob with the right size
    for row in rows:
        assert catalog.blobs.size(row.sha256) == row.size
    assert len(rows) < 2000
    report = collect_garbage(catalog, grace_seconds=0)
    assert report.kept_referenced == len(rows)
    # the interrupted upload can simply be run again
    catalog.upload([src], "lab/p")
    with catalog.db.session(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(File)) == 2000


def test_writer_locked_out_past_the_busy_timeout_gets_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: another process holding the write lock longer than the busy timeout is a
    DatabaseError naming the lock, and the blocked write leaves nothing behind."""
    monkeypatch.setattr(catalog_db, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "locked.db"
    cat = Catalog.initialize(f"sqlite:///{path}", str(tmp_path / "blobs"), "admin")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseError, match="locked"):
            cat.create_group("lab")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [node.label for node in cat.tree("")] == []
    cat.create_group("lab")
    assert [node.label for node in cat.tree("")] == ["lab"]
    cat.close()
