"""The driver connections searches run on (Database.driver_connection), on a real SQLite file
and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from catalog import db as catalog_db
from catalog.catalog import Catalog
from catalog.errors import DatabaseError


def _fill(cat: Catalog) -> Catalog:
    cat.create_group("lab")
    for n in range(5):
        cat.create_project("lab", f"p{n}")
    return cat


@pytest.fixture
def lab(catalog: Catalog) -> Catalog:
    """SQLite and PostgreSQL."""
    return _fill(catalog)


@pytest.fixture
def sqlite_lab(tmp_path: Path) -> Iterator[Catalog]:
    """SQLite only: where connections are kept."""
    cat = Catalog.initialize(f"sqlite:///{tmp_path / 'c.db'}", str(tmp_path / "blobs"), "admin")
    yield _fill(cat)
    cat.close()


def _labels(cat: Catalog) -> list[str]:
    return sorted(r["project.label"] for r in cat.search("", "project"))


def test_sqlite_searches_reuse_a_kept_connection(sqlite_lab: Catalog) -> None:
    assert _labels(sqlite_lab) == [f"p{n}" for n in range(5)]
    with sqlite_lab.db.driver_connection() as first:
        pass
    with sqlite_lab.db.driver_connection() as again:
        assert again is first

    # Two searches open at once hold two connections, and both go back.
    one, two = sqlite_lab.search("", "project"), sqlite_lab.search("", "project")
    assert next(one) and next(two)
    assert len(sqlite_lab.db._spares) == 0
    del one, two  # a search's connection goes back when its iterator is dropped
    assert len(sqlite_lab.db._spares) == 2

    # An abandoned search left no read transaction behind: a checkpoint can complete.
    partial = sqlite_lab.search("", "project")
    next(partial)
    del partial
    raw = sqlite3.connect(sqlite_lab.db.engine.url.database or "")
    sqlite_lab.create_group("written-after")
    busy, _log, _done = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    raw.close()
    assert busy == 0


def test_a_connection_that_failed_is_closed_not_kept(sqlite_lab: Catalog) -> None:
    with sqlite_lab.db.driver_connection() as kept:
        pass
    with pytest.raises(DatabaseError), sqlite_lab.db.driver_connection() as conn:
        assert conn is kept
        raise DatabaseError("the search failed")
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        kept.execute("SELECT 1")
    # One left inside a transaction is closed too: its snapshot must not outlive the search.
    with sqlite_lab.db.driver_connection() as conn:
        conn.execute("BEGIN")
    assert sqlite_lab.db._spares == []
    assert _labels(sqlite_lab)[0] == "p0"


def test_a_forked_child_never_uses_its_parents_connections(sqlite_lab: Catalog) -> None:
    with sqlite_lab.db.driver_connection() as parents:
        pass
    sqlite_lab.db._spares_pid = -1  # what a forked child sees: another process's connections
    with sqlite_lab.db.driver_connection() as childs:
        assert childs is not parents
    parents.execute("SELECT 1")  # abandoned, not closed: the parent still owns it


def test_kept_connections_are_bounded_and_closed_on_dispose(lab: Catalog, db_url: str) -> None:
    iterators = [lab.search("", "project") for _ in range(catalog_db.SPARE_DRIVER_CONNECTIONS + 2)]
    for it in iterators:
        next(it)
    del it
    iterators.clear()
    if db_url.startswith("sqlite"):
        assert len(lab.db._spares) == catalog_db.SPARE_DRIVER_CONNECTIONS
        kept = list(lab.db._spares)
        lab.db.dispose()
        assert lab.db._spares == []
        with pytest.raises(sqlite3.ProgrammingError):
            kept[0].execute("SELECT 1")
    else:
        assert lab.db._spares == []  # PostgreSQL: the pool's connections
        assert lab.db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert _labels(lab)[-1] == "p4"


def test_memory_databases_are_not_kept(tmp_path: Path) -> None:
    db = catalog_db.Database("sqlite://")
    with db.driver_connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert db._spares == []
    with db.engine.connect() as sa_conn:
        assert sa_conn.execute(text("SELECT 2")).scalar() == 2
    db.dispose()
