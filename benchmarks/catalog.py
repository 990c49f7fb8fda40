"""Catalog benchmark: bulk insert throughput and search latency, ours against the raw driver.

Usage: ``python benchmarks/catalog.py [--rows 1000000] [--dialects sqlite,postgres]
[--pg-url URL] [--repeat 30] [--batch 10000] [--json out.json]``

Builds a catalog of ``--rows`` file rows (see ``catalog_data``) with
:func:`catalog.bulk.bulk_insert_files`, batch by batch interleaved with the same rows written
through the raw driver (sqlite3 ``executemany`` / psycopg ``COPY``, JSON serialized with
orjson as the catalog does) into a second, empty database of the same schema.  Then runs
five searches through :meth:`Catalog.search`, each interleaved with the same query
hand-written in SQL on the raw driver, and prints medians, p95 and the ratio ours/raw.
PostgreSQL comes from ``--pg-url`` (default ``GEARBROKER_TEST_PG_URL``); the script creates
and drops its own databases there.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the ``catalog`` package: import the package before putting this
# folder (for the sibling modules catalog_data and catalog_queries) back on the path.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE]
import catalog  # noqa: E402, F401

sys.path.append(_HERE)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import orjson  # noqa: E402
import psycopg  # noqa: E402
from catalog_data import Plan, batches, insert_containers, plan  # noqa: E402
from catalog_queries import Search, searches  # noqa: E402
from psycopg import sql  # noqa: E402
from sqlalchemy import make_url  # noqa: E402

from catalog import filetypes  # noqa: E402
from catalog.bulk import COLUMNS, FileRow, bulk_insert_files  # noqa: E402
from catalog.catalog import Catalog  # noqa: E402
from catalog.db import SQLITE_PRAGMAS, Database, upgrade  # noqa: E402
from catalog.indexes import create_info_index  # noqa: E402

GOAL_INSERT = 50_000
GOAL_P95_MS = 50.0
GOAL_RATIO = 1.5
DIALECTS = {"sqlite": "sqlite", "postgres": "postgresql", "postgresql": "postgresql"}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    dialects = [DIALECTS[d.strip()] for d in args.dialects.split(",") if d.strip()]
    if "postgresql" in dialects and not args.pg_url:
        print("PostgreSQL needs --pg-url or GEARBROKER_TEST_PG_URL", file=sys.stderr)
        return 2
    hierarchy = plan(args.rows)
    print(
        f"catalog benchmark: {args.rows:,} file rows in {len(hierarchy.containers):,} containers "
        f"({len(hierarchy.projects)} projects), batches of {args.batch:,}, "
        f"{args.repeat} runs per query"
    )
    results: dict[str, Any] = {"rows": args.rows, "batch": args.batch, "dialects": {}}
    for dialect in dialects:
        with (
            tempfile.TemporaryDirectory(prefix="gb-bench-") as tmp,
            _databases(dialect, Path(tmp), args.pg_url) as (ours_url, raw_url),
        ):
            results["dialects"][dialect] = run(
                dialect, hierarchy, ours_url, raw_url, Path(tmp), args
            )
    _report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dialects", default="sqlite,postgres")
    parser.add_argument("--pg-url", default=os.environ.get("GEARBROKER_TEST_PG_URL"))
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per query")
    parser.add_argument("--batch", type=int, default=10_000, help="rows per transaction")
    parser.add_argument("--json", help="also write the results to this file")
    return parser


@contextmanager
def _databases(dialect: str, tmp: Path, pg_url: str | None) -> Iterator[tuple[str, str]]:
    """URLs of two empty databases (ours, raw): SQLite files, or new PostgreSQL databases."""
    if dialect == "sqlite":
        yield f"sqlite:///{tmp / 'ours.db'}", f"sqlite:///{tmp / 'raw.db'}"
        return
    assert pg_url is not None
    server = make_url(pg_url)
    names = [f"gb_bench_{uuid.uuid4().hex[:12]}_{kind}" for kind in ("ours", "raw")]
    with psycopg.connect(_libpq(pg_url), autocommit=True) as admin:
        for name in names:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
            )
    try:
        urls = [server.set(database=n).render_as_string(hide_password=False) for n in names]
        yield urls[0], urls[1]
    finally:
        with psycopg.connect(_libpq(pg_url), autocommit=True) as admin:
            for name in names:
                _drop_pg(admin, name)


def _drop_pg(admin: psycopg.Connection[Any], name: str) -> None:
    # Plain DROP cancels autovacuum workers itself; FORCE would need rights to kill them.
    for _attempt in range(10):
        try:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            return
        except psycopg.errors.ObjectInUse:
            time.sleep(0.5)
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def run(
    dialect: str, hierarchy: Plan, ours_url: str, raw_url: str, tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Insert, index and search on one dialect; returns the measurements."""
    cat = Catalog.initialize(ours_url, str(tmp / "blobs"), "bench")
    raw_db = Database(raw_url)
    try:
        upgrade(raw_db.engine)
        started = time.perf_counter()
        insert_containers(cat.db.engine, hierarchy)
        insert_containers(raw_db.engine, hierarchy)
        out: dict[str, Any] = {"containers_s": (time.perf_counter() - started) / 2}
        raw_db.dispose()
        with _raw_connection(raw_url) as raw_conn:
            out["insert"] = _insert(cat, raw_conn, dialect, hierarchy, args.batch)
        started = time.perf_counter()
        create_info_index(cat.db.engine, "file.info.PatientID")
        out["info_index_s"] = time.perf_counter() - started
        with cat.db.engine.connect() as conn:  # planner statistics, as autovacuum would gather
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
        with _raw_connection(ours_url) as raw_conn:
            out["searches"] = {
                s.key: _search(cat, raw_conn, dialect, s, args.repeat) for s in searches(hierarchy)
            }
        return out
    finally:
        cat.close()
        raw_db.dispose()


@contextmanager
def _raw_connection(url: str) -> Iterator[Any]:
    """A plain driver connection, configured as the catalog configures its own."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(make_url(url).database or "", isolation_level=None)
        for pragma in SQLITE_PRAGMAS:
            conn.execute(f"PRAGMA {pragma}")
        try:
            yield conn
        finally:
            conn.close()
        return
    with psycopg.connect(_libpq(url)) as pg:
        yield pg


def _insert(
    cat: Catalog, raw: Any, dialect: str, hierarchy: Plan, batch_size: int
) -> dict[str, float]:
    """Insert every batch through bulk_insert_files and through the raw driver, alternately."""
    ours_s = raw_s = 0.0
    for batch in batches(hierarchy, batch_size):
        started = time.perf_counter()
        with cat.db.session() as session:
            bulk_insert_files(session, batch)
        middle = time.perf_counter()
        _raw_insert(raw, dialect, hierarchy, batch)
        ours_s += middle - started
        raw_s += time.perf_counter() - middle
    return {
        "ours_rows_per_s": hierarchy.rows / ours_s,
        "raw_rows_per_s": hierarchy.rows / raw_s,
        "ratio": ours_s / raw_s,
    }


def _raw_insert(raw: Any, dialect: str, hierarchy: Plan, batch: list[FileRow]) -> None:
    """The hand-written loader: same rows and columns, ancestors known up front."""
    now = datetime.now(UTC)
    pg = dialect == "postgresql"
    stamp: Any = now if pg else now.strftime("%Y-%m-%d %H:%M:%S.%f")
    values = []
    for row in batch:
        acq = hierarchy.containers[row.container_id - 1]
        ftype, mime = row.type, row.mimetype
        if ftype is None or mime is None:
            detected = filetypes.detect(row.name)
            ftype, mime = ftype or detected[0], mime or detected[1]
        values.append(
            (
                row.container_id, row.name, 1, True if pg else 1, row.size, row.sha256, mime,
                ftype, row.modality, _dumps(row.classification), _dumps(row.info),
                _dumps(row.tags), row.origin_type, row.origin_id, acq["group_id"],
                acq["project_id"], acq["subject_id"], acq["session_id"], row.container_id,
                stamp, stamp,
            )
        )  # fmt: skip
    if pg:
        with raw.cursor() as cur, cur.copy(f"COPY files ({', '.join(COLUMNS)}) FROM STDIN") as cp:
            for value in values:
                cp.write_row(value)
        raw.commit()
        return
    marks = ", ".join("?" for _ in COLUMNS)
    raw.execute("BEGIN IMMEDIATE")
    raw.executemany(f"INSERT INTO files ({', '.join(COLUMNS)}) VALUES ({marks})", values)
    raw.execute("COMMIT")


def _dumps(value: Any) -> str:
    # The catalog's serializer, called directly: the ratio measures our layer, not json.
    return orjson.dumps(value).decode()


def _search(cat: Catalog, raw: Any, dialect: str, search: Search, repeat: int) -> dict[str, Any]:
    """Time the catalog search and the raw SQL alternately; both must return as many rows."""
    text = search.raw_sql(dialect)

    def ours() -> int:
        return len(list(cat.search(search.query, search.target, search.columns, search.limit)))

    def by_hand() -> int:
        if dialect == "postgresql":
            with raw.cursor() as cur:
                cur.execute(text, search.params)
                rows = len(cur.fetchall())
            raw.rollback()
            return rows
        return len(raw.execute(text, search.params).fetchall())

    counts = {ours(), by_hand()}  # also warms caches
    if len(counts) != 1:
        raise RuntimeError(f"search {search.key}: ours and raw disagree on row counts {counts}")
    times: dict[str, list[float]] = {"ours": [], "raw": []}
    for i in range(repeat):
        order = (
            (("ours", ours), ("raw", by_hand)) if i % 2 == 0 else (("raw", by_hand), ("ours", ours))
        )
        for name, fn in order:
            started = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - started) * 1000)
    stats = {name: _stats(ms) for name, ms in times.items()}
    return {
        "title": search.title,
        "query": search.query,
        "rows": counts.pop(),
        "indexed": search.indexed,
        **stats,
        "ratio": stats["ours"]["p50"] / stats["raw"]["p50"],
    }


def _stats(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    p95 = ordered[max(0, -(-len(ordered) * 95 // 100) - 1)]
    return {"p50": statistics.median(ordered), "p95": p95}


def _report(results: dict[str, Any]) -> None:
    print()
    head = f"{'dialect':<11}{'measure':<38}{'ours':>15}{'raw':>15}{'ours/raw':>10}{'rows':>8}  goal"
    print(head)
    print("-" * (len(head) + 14))
    for dialect, res in results["dialects"].items():
        ins = res["insert"]
        misses = []
        if dialect == "sqlite" and ins["ours_rows_per_s"] < GOAL_INSERT:
            misses.append(f"MISS <{GOAL_INSERT:,}/s")
        if ins["ratio"] > GOAL_RATIO:
            misses.append("ratio MISS")
        print(
            f"{dialect:<11}{'bulk insert, rows/s':<38}{ins['ours_rows_per_s']:>15,.0f}"
            f"{ins['raw_rows_per_s']:>15,.0f}{ins['ratio']:>9.2f}x{results['rows']:>8}  "
            f"{', '.join(misses) or 'ok'}"
        )
        for key, s in res["searches"].items():
            misses = []
            if s["indexed"] and s["ours"]["p95"] > GOAL_P95_MS:
                misses.append("p95 MISS")
            if s["ratio"] > GOAL_RATIO:
                misses.append("ratio MISS")
            ours = f"{s['ours']['p50']:.1f} / {s['ours']['p95']:.1f}"
            raw = f"{s['raw']['p50']:.1f} / {s['raw']['p95']:.1f}"
            print(
                f"{'':<11}{f'({key}) ' + s['title']:<38}{ours:>15}{raw:>15}"
                f"{s['ratio']:>9.2f}x{s['rows']:>8}  {', '.join(misses) or 'ok'}"
            )
        print(
            f"{'':<11}(containers {res['containers_s']:.1f} s, "
            f"file.info.PatientID index {res['info_index_s']:.1f} s)"
        )
    print("searches: milliseconds, median / p95")
    print(
        f"goals: insert >= {GOAL_INSERT:,} rows/s on SQLite; p95 <= {GOAL_P95_MS:.0f} ms for "
        f"(a)-(d); ours/raw <= {GOAL_RATIO}x (ratios of medians; insert: time ours/raw)"
    )


if __name__ == "__main__":
    sys.exit(main())
