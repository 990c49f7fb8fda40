"""Alembic owns the schema: migrations match the models, and old schemas are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from catalog.catalog import Catalog
from catalog.db import Database, check_schema, head_revision, upgrade
from catalog.errors import SchemaOutdatedError
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
