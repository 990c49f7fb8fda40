"""Searches run straight on the database driver from statements compiled once.

A search statement holds all its values as bound parameters (never in the SQL text) and is
memoized by :func:`catalog.query.compile_search`.  :func:`prepare` compiles it once per
dialect into SQL text plus the driver-ready parameters (each passed through its type's bind
processor, as SQLAlchemy would); :func:`run` executes that on the connection's DBAPI
connection and decodes rows a chunk at a time (:mod:`catalog.query.rows`).  This skips
SQLAlchemy's per-execution work (cache key, execution context, result rows), which made a
sub-millisecond indexed search take twice as long as the same SQL on the bare driver.

PostgreSQL rows stream in chunks over one round trip; SQLite's cursor is lazy by itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Dialect

from catalog.query.rows import Decoder, decoder


@dataclass(frozen=True)
class Prepared:
    """A search statement as the driver takes it."""

    sql: str
    params: Sequence[Any] | Mapping[str, Any]
    decode: Decoder
    streamed: bool  # psycopg's Cursor.stream (else fetchmany on a lazy cursor: SQLite)
    driver_error: type[Exception]  # the driver's base exception class


@lru_cache(maxsize=256)
def prepare(stmt: Select[Any], dialect: Dialect, names: tuple[str, ...], target: str) -> Prepared:
    """``stmt`` (the search for Data View columns ``names`` on ``target`` objects) compiled
    for ``dialect``.  Memoized: the statements are immutable and memoized themselves."""
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    values = compiled.construct_params()
    for bind, name in compiled.bind_names.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is None:
            continue
        if bind.expanding:  # IN lists of values; the compiler's hold plain integers
            raise TypeError(f"expanding parameter {name!r} needs a bind processor")
        values[name] = process(values[name])
    params: Sequence[Any] | Mapping[str, Any] = values
    if compiled.positional:
        params = tuple(values[name] for name in compiled.positiontup or ())
    return Prepared(
        sql=compiled.string,
        params=params,
        decode=decoder(stmt, dialect, names, target),
        streamed=dialect.name == "postgresql",
        driver_error=dialect.loaded_dbapi.Error,
    )


def run(driver_conn: Any, prepared: Prepared, chunk: int) -> Iterator[list[dict[str, Any]]]:
    """Rows of ``prepared`` on DBAPI connection ``driver_conn``, in lists of up to ``chunk``
    rows: on SQLite (autocommit) the statement is its own snapshot; psycopg begins a
    transaction, which the connection's owner ends.  Driver errors are raised as the
    driver's exceptions."""
    cursor = driver_conn.cursor()
    try:
        if prepared.streamed:
            # psycopg: one round trip, rows arrive in chunks (libpq's chunked or single-row
            # mode), never the whole result in memory.  Unlike a server-side cursor it needs
            # no DECLARE, FETCH and CLOSE, which tripled the time of a short search.
            stream = cursor.stream(prepared.sql, prepared.params, size=chunk)
            while rows := list(islice(stream, chunk)):
                yield prepared.decode(rows)
            return
        cursor.execute(prepared.sql, prepared.params)
        while True:
            rows = cursor.fetchmany(chunk)
            if rows:
                yield prepared.decode(rows)
            if len(rows) < chunk:
                return
    finally:
        cursor.close()
