"""Search semantics on SQLite and PostgreSQL (the ``catalog`` fixture runs both)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql, sqlite

import catalog.query as query_module
from catalog.catalog import Catalog
from catalog.errors import QueryError
from catalog.query import compile_search, compiler, prepare_search, search_chunks
from tests.catalog.query_data import T0, T1, Data, build


@pytest.fixture
def data(catalog: Catalog) -> Data:
    return build(catalog)


def found(cat: Catalog, query: str, target: str = "file") -> list[int]:
    return [row[f"{target}.id"] for row in cat.search(query, target, [f"{target}.id"])]


def names(data: Data, *keys: str) -> list[int]:
    return sorted(data[k] for k in keys)


def test_issue_example(catalog: Catalog, data: Data) -> None:
    query = 'file.type = dicom and session.info.age > 30 and acquisition.label =~ "T1"'
    # s03's age is the string "40": a numeric comparison ignores it; x01 is 50.
    assert found(catalog, query) == names(data, "s01/t1.dcm", "x01/t1.dcm")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("file.type = nifti", ["s01/t1.nii.gz"]),
        ("file.type != dicom", ["s01/t1.nii.gz", "fs/aseg.stats", "protocol.pdf"]),
        ("file.size < 100", ["fs/aseg.stats", "protocol.pdf"]),
        (
            "file.size <= 100",
            ["s02/t1.dcm", "s03/t1.dcm", "fs/aseg.stats", "protocol.pdf", "x01/t1.dcm"],
        ),
        ("file.size > 4096", ["s01/bold.dcm"]),
        ("file.size >= 4096", ["s01/t1.nii.gz", "s01/bold.dcm"]),
        ("file.name =~ '^t1\\.n'", ["s01/t1.nii.gz"]),
        ("file.name !~ 't1' and file.type = dicom", ["s01/bold.dcm"]),
        ("file.name contains '.nii'", ["s01/t1.nii.gz"]),
        ("file.type in [pdf, tabular]", ["fs/aseg.stats", "protocol.pdf"]),
        ("file.type not in [dicom, 'nifti']", ["fs/aseg.stats", "protocol.pdf"]),
        ("file.modality exists", ["s01/t1.dcm", "s01/bold.dcm"]),
        ("file.modality = null and file.type = nifti", ["s01/t1.nii.gz"]),
        ("file.tags contains motion", ["s01/bold.dcm"]),
        ("file.tags = 'qc-pass'", ["s01/t1.dcm"]),
        ("file.tags =~ '^qc-'", ["s01/t1.dcm", "s01/bold.dcm"]),
        ("file.tags exists", ["s01/t1.dcm", "s01/bold.dcm"]),
        ("file.classification.Intent contains Functional", ["s01/bold.dcm"]),
        (
            "file.classification.Measurement = T1 and file.type = dicom",
            ["s01/t1.dcm", "s02/t1.dcm"],
        ),
        (
            "file.classification.Measurement not exists and file.type = dicom",
            ["s01/bold.dcm", "s03/t1.dcm", "x01/t1.dcm"],
        ),
        ("file.info.PatientID = P001", ["s01/t1.dcm", "s01/t1.nii.gz", "s01/bold.dcm"]),
        ("file.info.PatientID > P002", ["s03/t1.dcm", "x01/t1.dcm"]),
        ("file.info.PatientID =~ '[34]$'", ["s03/t1.dcm", "x01/t1.dcm"]),
        ("file.info.SeriesNumber = 3", ["s01/t1.dcm", "s02/t1.dcm"]),
        ("file.info.SeriesNumber >= 4", ["s01/bold.dcm"]),
        ("file.info.SeriesNumber = '3'", []),
        ("file.info.SeriesNumber in [5, 6]", ["s01/bold.dcm"]),
        ("file.info.Flags contains a", ["s01/t1.dcm"]),
        ("file.info.Flags contains 7", ["s01/t1.dcm"]),
        ("file.info.Flags contains '7'", []),
        ("file.info.Desc contains MPR", ["s01/t1.dcm"]),
        ("file.info.Derived = true", ["s01/t1.nii.gz"]),
        ("file.info.Derived = FALSE", ["s01/t1.dcm"]),
        ("file.info.Derived exists and not file.info.Derived = true", ["s01/t1.dcm"]),
        # type-strict equality: true/false are not 1/0, an array is not its JSON text
        ("file.info.Derived = 1", []),
        ("file.info.Derived = 0", []),
        ("file.info.Flags = '[\"a\",7]'", []),
        ("file.info.Flags = '[\"a\", 7]'", []),
        ("file.type = dicom and session.info.age = '40'", ["s03/t1.dcm"]),
        ("file.type = dicom and session.info.age = 40", []),
        ("file.type = dicom and session.info.age = 50", ["x01/t1.dcm"]),
        (
            "file.info.SeriesNumber != 3 and file.type = dicom",
            ["s01/bold.dcm", "s03/t1.dcm", "x01/t1.dcm"],
        ),
        ("file.info.Missing = null and file.type = nifti", ["s01/t1.nii.gz"]),
        ("file.info.SeriesNumber != null", ["s01/t1.dcm", "s01/bold.dcm", "s02/t1.dcm"]),
        (
            "file.type = dicom and (file.info.SeriesNumber = 5 or session.info.age < 30)",
            ["s01/bold.dcm", "s02/t1.dcm"],
        ),
        ("NOT (file.type = dicom OR file.type = pdf) AND file.size > 10", ["s01/t1.nii.gz"]),
    ],
)
def test_operators_on_files(catalog: Catalog, data: Data, query: str, expected: list[str]) -> None:
    assert found(catalog, query) == names(data, *expected)


def test_only_current_versions(catalog: Catalog, data: Data) -> None:
    assert found(catalog, "file.name = 't1.dcm' and subject.label = s01") == [data["s01/t1.dcm"]]


def test_timestamps(catalog: Catalog, data: Data) -> None:
    assert found(catalog, "file.created = 2024-05-01") == [data["s01/t1.dcm"]]
    assert found(catalog, "file.created <= 2024-05-01 and file.info.PatientID = P001") == [
        data["s01/t1.dcm"]
    ]
    assert found(catalog, "file.created > 2024-05-01 and file.info.PatientID = P001") == names(
        data, "s01/t1.nii.gz", "s01/bold.dcm"
    )
    assert found(catalog, "file.created = '2024-06-15T10:30:00+02:00'") == names(
        data, "s01/t1.nii.gz", "s01/bold.dcm"
    )
    assert found(catalog, "acquisition.created < 2024-06-15T08:30Z", "acquisition") == [
        data["s01/T1"]
    ]


def test_joins_up(catalog: Catalog, data: Data) -> None:
    assert found(catalog, "group.label = lab2") == [data["x01/t1.dcm"]]
    assert found(catalog, "project.info.pi = Ada and subject.info.sex = F") == names(
        data, "s01/t1.dcm", "s01/t1.nii.gz", "s01/bold.dcm", "fs/aseg.stats"
    )
    assert found(catalog, f"session.id = {data['s02/ses1']}") == [data["s02/t1.dcm"]]
    assert found(catalog, "session.tags contains reviewed and acquisition.label = fMRI_rest") == [
        data["s01/bold.dcm"]
    ]
    # files without a subject still match a negated subject condition
    assert found(catalog, "not subject.label = s01 and project.label = brain") == names(
        data, "s02/t1.dcm", "s03/t1.dcm", "protocol.pdf"
    )
    assert found(catalog, "session.info.age > 30", "acquisition") == names(
        data, "s01/T1", "s01/rest"
    ) + sorted([_acq_of(catalog, data["x01/ses1"])])


def _acq_of(cat: Catalog, session_id: int) -> int:
    rows = list(cat.search(f"session.id = {session_id}", "acquisition", ["acquisition.id"]))
    assert len(rows) == 1
    value: int = rows[0]["acquisition.id"]
    return value


def test_analysis_levels(catalog: Catalog, data: Data) -> None:
    assert found(catalog, "analysis.label = fs") == [data["fs/aseg.stats"]]
    assert found(catalog, "analysis.id exists") == [data["fs/aseg.stats"]]
    assert data["fs/aseg.stats"] not in found(catalog, "not analysis.id exists")
    assert found(catalog, "file.type = tabular", "analysis") == [data["fs"]]
    assert found(catalog, "session.info.age = 35", "analysis") == [data["fs"]]
    assert found(catalog, "analysis.info.gear = freesurfer", "session") == [data["s01/ses1"]]


def test_joins_down(catalog: Catalog, data: Data) -> None:
    assert found(catalog, "acquisition.label =~ MPRAGE", "session") == [data["s01/ses1"]]
    assert found(catalog, "file.type = nifti", "subject") == [data["s01"]]
    assert found(catalog, "file.info.SeriesNumber = 3", "session") == names(
        data, "s01/ses1", "s02/ses1"
    )
    # and-ed conditions on one lower level must hold for the same acquisition ...
    same = "acquisition.label = fMRI_rest and acquisition.info.EchoTime exists"
    assert found(catalog, same, "session") == []
    # ... unless a `not` separates them; `not` means "no acquisition below matches"
    assert found(
        catalog, "not acquisition.label =~ MPRAGE and project.label = brain", "session"
    ) == names(data, "s02/ses1", "s03/ses1")
    assert found(catalog, "acquisition.label != T1w and project.label = brain", "session") == [
        data["s01/ses1"]
    ]
    assert found(catalog, "file.type = dicom and file.tags contains motion", "project") == [
        data["brain"]
    ]
    assert found(catalog, "session.info.age > 30 and file.type = nifti", "group") == [data["lab"]]


def test_empty_query_and_limit(catalog: Catalog, data: Data) -> None:
    everything = found(catalog, "")
    assert len(everything) == 8
    assert everything == sorted(everything)
    assert [r["file.id"] for r in catalog.search("", columns=["file.id"], limit=3)] == everything[
        :3
    ]
    assert found(catalog, "", "group") == names(data, "lab", "lab2")


def test_columns(catalog: Catalog, data: Data) -> None:
    rows = list(
        catalog.search(
            "file.type = dicom and subject.label = s01",
            columns=[
                "path",
                "file.name",
                "session.info.age",
                "file.info.Flags",
                "file.classification.Intent",
                "file.tags",
                "file.created",
                "session.id",
                "analysis.label",
            ],
        )
    )
    assert rows[0] == {
        "path": "lab/brain/s01/ses1/T1w_MPRAGE/files/t1.dcm",
        "file.name": "t1.dcm",
        "session.info.age": 35,
        "file.info.Flags": ["a", 7],
        "file.classification.Intent": ["Structural"],
        "file.tags": ["qc-pass"],
        "file.created": T0,
        "session.id": data["s01/ses1"],
        "analysis.label": None,
    }
    assert isinstance(rows[1]["file.created"], datetime)
    assert rows[1]["file.created"] == T1
    assert rows[1]["file.info.Flags"] is None

    default = list(catalog.search("analysis.label = fs"))
    assert default == [
        {
            "group.label": "lab",
            "project.label": "brain",
            "subject.label": "s01",
            "session.label": "ses1",
            "acquisition.label": None,
            "file.name": "aseg.stats",
            "file.type": "tabular",
            "file.size": 10,
        }
    ]
    paths = [r["path"] for r in catalog.search("", "analysis", ["path"])]
    assert paths == ["lab/brain/s01/ses1/analyses/fs"]
    [pdf] = catalog.search("file.type = pdf", columns=["path"])
    assert pdf == {"path": "lab/brain/files/protocol.pdf"}
    sessions = list(catalog.search("session.info.age exists", "session", ["path"]))
    assert [r["path"] for r in sessions] == [
        "lab/brain/s01/ses1",
        "lab/brain/s02/ses1",
        "lab/brain/s03/ses1",
        "lab2/other/x01/ses1",
    ]


def test_column_below_target_is_rejected(catalog: Catalog, data: Data) -> None:
    with pytest.raises(QueryError, match="below the result level"):
        catalog.search("", "session", ["file.name"])


def test_permissions(catalog: Catalog, data: Data, as_user: Callable[[str], Catalog]) -> None:
    catalog.add_permission("lab/brain", "alice", "ro")
    catalog.add_permission("lab2", "bob", "rw")
    alice, bob, eve = as_user("alice"), as_user("bob"), as_user("eve")
    assert found(alice, "file.type = dicom") == names(
        data, "s01/t1.dcm", "s01/bold.dcm", "s02/t1.dcm", "s03/t1.dcm"
    )
    assert found(bob, "file.type = dicom") == [data["x01/t1.dcm"]]
    assert found(bob, "", "group") == [data["lab2"]]
    assert found(bob, "", "project") == [data["other"]]
    assert found(alice, "", "project") == [data["brain"]]
    assert found(eve, "") == []
    assert found(eve, "", "group") == []


def test_search_chunks_on_a_driver_connection(catalog: Catalog, data: Data) -> None:
    engine = catalog.db.engine
    pooled = engine.raw_connection()
    try:
        pdfs = prepare_search(engine.dialect, None, "file.type = pdf", columns=["file.name"])
        chunks = search_chunks(pooled.driver_connection, pdfs)
        assert list(chunks) == [[{"file.name": "protocol.pdf"}]]
        scoped = search_chunks(
            pooled.driver_connection, prepare_search(engine.dialect, [], "file.type = pdf")
        )
        assert list(scoped) == []
    finally:
        pooled.close()


def test_rows_stream_in_chunks(catalog: Catalog, data: Data, monkeypatch: Any) -> None:
    """Rows cross chunk boundaries intact: values decoded per chunk land in their rows."""
    columns = ["path", "file.name", "file.info.Flags", "file.created", "session.info.age"]
    whole = list(catalog.search("", columns=columns))
    assert len(whole) > 3
    monkeypatch.setattr(query_module, "YIELD_PER", 2)
    assert list(catalog.search("", columns=columns)) == whole
    assert [list(r) for r in whole] == [columns] * len(whole)


def test_search_abandoned_midway_leaves_the_catalog_usable(
    catalog: Catalog, data: Data, monkeypatch: Any
) -> None:
    """A consumer that stops reading (``next`` then close) releases the connection cleanly,
    also while PostgreSQL is still streaming rows."""
    monkeypatch.setattr(query_module, "YIELD_PER", 1)
    for _ in range(3):  # more than once: each time on a connection returned to the pool
        rows = catalog.search("", columns=["file.id"])
        assert next(rows)["file.id"] > 0
        del rows  # closes the generator inside, which ends its transaction
    catalog.info_set("lab/brain", {"after": 1})
    assert found(catalog, "project.info.after = 1", "project") == [data["brain"]]


def test_errors_are_raised_before_streaming(catalog: Catalog) -> None:
    with pytest.raises(QueryError, match="position 13"):
        catalog.search("file.type = and")
    with pytest.raises(QueryError, match=r"unknown field 'file\.colour'"):
        catalog.search("file.colour = red")
    with pytest.raises(QueryError, match="unknown result level"):
        catalog.search("", target="dataset")


def test_regex_postgresql_rejects(catalog: Catalog, data: Data) -> None:
    """Python's ``re`` accepts named groups, PostgreSQL does not: a QueryError, not a crash."""
    query = "file.name =~ '(?P<stem>t1)\\.dcm'"
    if catalog.db.dialect == "postgresql":
        with pytest.raises(QueryError, match="invalid regular expression"):
            list(catalog.search(query))
        assert found(catalog, "file.type = pdf") == [data["protocol.pdf"]]
    else:
        assert len(found(catalog, query)) == 4


DIALECTS = {"sqlite": sqlite.dialect, "postgresql": postgresql.dialect}
LINKED = [
    ("file", "project.label = brain and subject.info.sex = F and session.info.age > 30"),
    ("file", "subject.label = s01 and acquisition.label = fMRI_rest"),
    ("file", "group.label = lab and session.label = ses1 and file.type = dicom"),
    ("file", "project.info.pi = Ada and not subject.label = s01 and session.label = ses1"),
    ("file", "analysis.label = fs and subject.label = s01 and session.info.age = 35"),
    ("file", "(subject.label = s01 or subject.label = s02) and session.label = ses1"),
    ("acquisition", "project.label = brain and session.info.age < 30"),
    ("acquisition", "group.label = lab2 and subject.label = x01 and session.label = ses1"),
    ("session", "project.label = brain and subject.info.sex exists"),
    ("analysis", "subject.label = s01 and session.label = ses1"),
]


@pytest.mark.parametrize(("target", "query"), LINKED)
def test_linking_joined_levels_changes_no_result(
    catalog: Catalog, data: Data, monkeypatch: pytest.MonkeyPatch, target: str, query: str
) -> None:
    linked = found(catalog, query, target)
    compiler._compile_cached.cache_clear()
    monkeypatch.setattr(compiler, "_chain_links", lambda levels, by_parent: {})
    try:
        assert found(catalog, query, target) == linked
    finally:
        compiler._compile_cached.cache_clear()
    assert linked  # every query matches something, so the comparison means something


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_inner_joined_levels_are_linked(dialect: str) -> None:
    def sql(query: str) -> str:
        stmt = compile_search(query, "file", ["file.id"], dialect)
        return " ".join(str(stmt.compile(dialect=DIALECTS[dialect]())).split())

    pg = dialect == "postgresql"
    four = sql(
        "project.label = p and subject.label = s and session.label = x and acquisition.label = a"
    )
    for upper, lower in [
        ("project", "subject"),
        ("subject", "session"),
        ("session", "acquisition"),
    ]:
        link = f"{lower}.{'parent' if pg else upper}_id = {upper}.id"
        assert link in four
    # a level in between that is not joined: the ancestor-id column on both
    assert "session.project_id = project.id" in sql("project.label = p and session.label = x")
    # a LEFT-joined level (the condition can hold without it) is not linked
    left = sql("project.label = p and not subject.label = s and session.label = x")
    assert "LEFT OUTER JOIN containers AS subject ON subject.id = file.subject_id " in left
    assert "session.project_id = project.id" in left
    assert "subject.id AND" not in left and "= subject.id" not in left
