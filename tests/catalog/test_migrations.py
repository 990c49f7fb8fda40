"""Alembic owns the schema: migrations match the models, and old schemas are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from catalog.catalog import Catalog
from catalog.db import Database, check_schema, head_revision, upgrade
from catalog.errors import DatabaseError, SchemaOutdatedError
from catalog.models import Base


def test_migrations_match_models(db_url: str) -> None:
    db = Database(db_url)
    upgrade(db.engine)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    db.dispose()
    assert diff == []


def test_open_refuses_empty_and_outdated_schema(db_url: str, tmp_path: Path) -> None:
    store = str(tmp_path / "blobs")
    with pytest.raises(SchemaOutdatedError, match="gearbroker init"):
        Catalog.open(db_url, store, "u")
    Catalog.initialize(db_url, store, "u").close()
    Catalog.open(db_url, store, "u").close()
    db = Database(db_url)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffffdead'"))
    with pytest.raises(SchemaOutdatedError, match="newer gearbroker"):
        check_schema(db.engine)
    db.dispose()
    assert head_revision()


def test_database_failures_leave_as_database_errors(
    catalog: Catalog, db_url: str, tmp_path: Path
) -> None:
    not_a_database = tmp_path / "notes.db"
    not_a_database.write_text("these are my notes, not a catalog\n" * 100)
    with pytest.raises(DatabaseError, match="cannot open the catalog database: file is not"):
        Catalog.open(str(not_a_database), str(tmp_path / "b"), "u")
    with pytest.raises(DatabaseError, match="cannot open the catalog database"):
        Catalog.open("postgresql://u:p@127.0.0.1:1/nothing", str(tmp_path / "b"), "u")
    failing = pytest.raises(DatabaseError, match="catalog database error")
    with failing, catalog.db.session() as session:  # an error the code inside did not handle
        session.execute(text("SELECT no_such_column FROM containers"))
    catalog.create_group("still-works")
    with catalog.db.engine.begin() as conn:  # the table a search reads is gone
        conn.execute(text("DROP TABLE files" + (" CASCADE" if "postgresql" in db_url else "")))
    with pytest.raises(DatabaseError, match="search failed in the catalog database"):
        list(catalog.search("file.type = dicom"))
