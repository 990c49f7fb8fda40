"""The five searches of ``benchmarks/catalog.py``: each as a catalog search and as the same
query hand-written in SQL for the raw driver (``?`` placeholders; ``%s`` on PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from catalog_data import Plan

EXPORT_ROWS = 10_000
_ACQ_JOINS = """
    LEFT JOIN containers sub ON sub.id = f.subject_id
    LEFT JOIN containers ses ON ses.id = f.session_id
    LEFT JOIN containers a ON a.id = f.acquisition_id"""


@dataclass(frozen=True)
class Search:
    """One benchmark search: catalog arguments plus raw SQL per dialect."""

    key: str
    title: str
    query: str
    target: str
    columns: list[str]
    limit: int | None
    sql: dict[str, str]
    params: tuple[Any, ...]
    indexed: bool  # counts towards the p95 goal

    def raw_sql(self, dialect: str) -> str:
        return (
            self.sql[dialect].replace("?", "%s") if dialect == "postgresql" else self.sql[dialect]
        )


def _both(sql: str, **pg: str) -> dict[str, str]:
    """The SQLite text, and the PostgreSQL text with JSON expressions swapped in."""
    sqlite = sql
    postgres = sql
    for placeholder, pg_expr in pg.items():
        sqlite_expr = _SQLITE_JSON[placeholder]
        sqlite = sqlite.replace("{" + placeholder + "}", sqlite_expr)
        postgres = postgres.replace("{" + placeholder + "}", pg_expr)
    return {"sqlite": sqlite, "postgresql": postgres}


_SQLITE_JSON = {
    "patient": "json_extract(f.info, '$.PatientID')",
    "series": "json_extract(f.info, '$.SeriesDescription')",
    "echo": "json_extract(f.info, '$.EchoTime')",
    "age": "json_extract(sub.info, '$.age')",
    "sex": "json_extract(sub.info, '$.sex')",
}


def searches(hierarchy: Plan) -> list[Search]:
    """The five searches, with values picked from ``hierarchy`` so that they match rows."""
    acq_label = next(a.label for a in hierarchy.acquisitions if a.protocol == 0)
    project = hierarchy.projects[len(hierarchy.projects) // 2]
    patient = sorted(hierarchy.ages)[len(hierarchy.ages) // 2]
    age = 75
    return [
        Search(
            "a",
            "acquisition.label",
            f'acquisition.label = "{acq_label}"',
            "acquisition",
            [
                "project.label",
                "subject.label",
                "session.label",
                "acquisition.label",
                "acquisition.id",
            ],
            None,
            _both(
                """SELECT p.label, sub.label, ses.label, a.label, a.id FROM containers a
                JOIN containers p ON p.id = a.project_id
                JOIN containers sub ON sub.id = a.subject_id
                JOIN containers ses ON ses.id = a.session_id
                WHERE a.level = 'acquisition' AND a.label = ? ORDER BY a.id"""
            ),
            (acq_label,),
            True,
        ),
        Search(
            "b",
            "file.type + project",
            f'file.type = nifti and project.label = "{project}"',
            "file",
            ["subject.label", "session.label", "acquisition.label", "file.name", "file.size"],
            None,
            _both(
                f"""SELECT sub.label, ses.label, a.label, f.name, f.size FROM files f
                JOIN containers p ON p.id = f.project_id {_ACQ_JOINS}
                WHERE f.current AND f.type = ? AND p.level = 'project' AND p.label = ?
                ORDER BY f.id"""
            ),
            ("nifti", project),
            True,
        ),
        Search(
            "c",
            "file.info.PatientID (index)",
            f'file.info.PatientID = "{patient}"',
            "file",
            ["session.label", "acquisition.label", "file.name", "file.info.SeriesDescription"],
            None,
            _both(
                f"""SELECT ses.label, a.label, f.name, {{series}} FROM files f {_ACQ_JOINS}
                WHERE f.current AND {{patient}} = ? ORDER BY f.id""",
                patient="(f.info ->> 'PatientID')",
                series="(f.info -> 'SeriesDescription')",
            ),
            (patient,),
            True,
        ),
        Search(
            "d",
            "join file/subject/session",
            f'file.type = nifti and subject.info.age > {age} and session.label = "ses-02"',
            "file",
            ["subject.label", "session.label", "acquisition.label", "file.name"],
            None,
            _both(
                f"""SELECT sub.label, ses.label, a.label, f.name FROM files f {_ACQ_JOINS}
                WHERE f.current AND f.type = ? AND {{age}} > ? AND ses.label = ?
                ORDER BY f.id""",
                age="(sub.info ->> 'age')::numeric",
            ),
            ("nifti", age, "ses-02"),
            True,
        ),
        Search(
            "e",
            f"Data View export, {EXPORT_ROWS:,} rows",
            f'project.label = "{project}"',
            "file",
            [
                "project.label",
                "subject.label",
                "subject.info.age",
                "subject.info.sex",
                "session.label",
                "acquisition.label",
                "file.name",
                "file.type",
                "file.size",
                "file.info.SeriesDescription",
                "file.info.EchoTime",
            ],
            EXPORT_ROWS,
            _both(
                f"""SELECT p.label, sub.label, {{age}}, {{sex}}, ses.label, a.label, f.name,
                f.type, f.size, {{series}}, {{echo}} FROM files f
                JOIN containers p ON p.id = f.project_id {_ACQ_JOINS}
                WHERE f.current AND p.level = 'project' AND p.label = ?
                ORDER BY f.id LIMIT {EXPORT_ROWS}""",
                age="(sub.info -> 'age')",
                sex="(sub.info -> 'sex')",
                series="(f.info -> 'SeriesDescription')",
                echo="(f.info -> 'EchoTime')",
            ),
            (project,),
            False,
        ),
    ]
