"""Search against real databases: hostile values, expression indexes, SQLite REGEXP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine, func, select, text

from catalog.catalog import Catalog
from catalog.db import make_engine
from catalog.errors import InvalidInputError
from catalog.indexes import create_gin_indexes, create_info_index, info_index_name
from catalog.models import Container, File, Level
from catalog.query import compile_search, install_sqlite_functions
from tests.catalog.query_data import add, add_file
from tests.catalog.test_query_parse import HOSTILE, quote


@pytest.fixture
def acquisition_id(catalog: Catalog) -> int:
    with catalog.db.session() as s:
        group = add(s, Level.GROUP, "g")
        project = add(s, Level.PROJECT, "p", group)
        subject = add(s, Level.SUBJECT, "s", project)
        session = add(s, Level.SESSION, "ses", subject)
        return add(s, Level.ACQUISITION, "acq", session).id


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=HOSTILE)
def test_hostile_values_round_trip(catalog: Catalog, acquisition_id: int, value: str) -> None:
    with catalog.db.session() as s:
        acq = s.get(Container, acquisition_id)
        assert acq is not None
        n = s.scalar(select(func.count()).select_from(File))
        file_id = add_file(s, acq, f"f{n}", info={"Hostile": value, "n": n}, tags=[value]).id
    query = f"file.info.Hostile = {quote(value)}"
    rows = list(catalog.search(query, columns=["file.id", "file.info.Hostile"]))
    assert file_id in [r["file.id"] for r in rows]
    assert all(r["file.info.Hostile"] == value for r in rows)
    tagged = [
        r["file.id"]
        for r in catalog.search(f"file.tags contains {quote(value)}", columns=["file.id"])
    ]
    assert file_id in tagged
    inside = [
        r["file.id"]
        for r in catalog.search(f"file.info.Hostile contains {quote(value)}", columns=["file.id"])
    ]
    assert file_id in inside


def _explain(engine: Engine, query: str) -> str:
    """The database's plan for the search ``query``, as one string."""
    compiled = compile_search(query, dialect=engine.dialect.name).compile(dialect=engine.dialect)
    sql = str(compiled)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            params: Any = tuple(compiled.params[k] for k in compiled.positiontup or ())
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()
            return "\n".join(str(r[-1]) for r in rows)
        conn.exec_driver_sql("SET enable_seqscan = off")
        params = {
            k: json.dumps(v) if isinstance(v, dict | list) else v
            for k, v in compiled.params.items()
        }
        rows = conn.exec_driver_sql("EXPLAIN " + sql, params).all()
        return "\n".join(str(r[0]) for r in rows)


def test_info_index_is_used(catalog: Catalog, acquisition_id: int) -> None:
    engine = catalog.db.engine
    with catalog.db.session() as s:
        acq = s.get(Container, acquisition_id)
        assert acq is not None
        for i in range(50):
            add_file(
                s,
                acq,
                f"f{i}.dcm",
                info={"PatientID": f"P{i:03d}"},
                classification={"Intent": ["Structural" if i % 2 else "Functional"]},
            )
    name = create_info_index(engine, "file.info.PatientID")
    assert name == "ix_files_info_PatientID"
    assert create_info_index(engine, " file.info.PatientID ") == name  # idempotent
    assert name in _explain(engine, "file.info.PatientID = P007")
    assert [
        r["file.name"] for r in catalog.search("file.info.PatientID = P007", columns=["file.name"])
    ] == ["f7.dcm"]
    session_index = create_info_index(engine, "session.info.age")
    assert session_index == "ix_containers_info_age"
    # through the join from files to their sessions (an inner join: the condition needs one)
    assert session_index in _explain(engine, "session.info.age = 35")
    if engine.dialect.name == "postgresql":
        assert f"{name}_num" in _explain(engine, "file.info.PatientID > 3")
        gins = create_gin_indexes(engine)
        assert "ix_files_classification_gin" in gins
        assert create_gin_indexes(engine) == gins  # idempotent
        assert len(list(catalog.search("file.classification.Intent = Structural"))) == 25
    else:
        assert create_gin_indexes(engine) == []


def test_info_index_rejects_other_fields(catalog: Catalog) -> None:
    with pytest.raises(InvalidInputError, match="not an info field"):
        create_info_index(catalog.db.engine, "file.name")


def test_info_index_names_fit_postgres() -> None:
    keys = tuple(f"k{i}" * 10 for i in range(10))
    name = info_index_name("containers", keys)
    assert len(name) <= 63
    assert name != info_index_name("containers", (*keys[:-1], "other"))
    assert info_index_name("files", ("a-b", "c")) == "ix_files_info_a_b__c"


def test_sqlite_regexp_function(tmp_path: Path) -> None:
    engine = make_engine(str(tmp_path / "r.db"))
    install_sqlite_functions(engine)
    install_sqlite_functions(engine)
    with engine.connect() as conn:
        got = conn.execute(
            text(
                "SELECT 'T1w' REGEXP '^T1', 'T2w' REGEXP '^T1', NULL REGEXP 'a', "
                "'a' REGEXP NULL, 'a' REGEXP '('"
            )
        ).one()
    assert tuple(got) == (1, 0, None, None, None)
    engine.dispose()
