"""SQL functions the search language needs on SQLite (PostgreSQL has them built in)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, event


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def regexp(pattern: Any, value: Any) -> int | None:
    """SQLite ``value REGEXP pattern``: 1/0 by ``re.search``; NULL when either side is NULL
    or the pattern is not valid (the query compiler rejects invalid patterns up front)."""
    if pattern is None or value is None:
        return None
    try:
        found = _compiled(str(pattern)).search(str(value))
    except re.error:
        return None
    return 1 if found else 0


def _register(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.create_function("regexp", 2, regexp, deterministic=True)


def install_sqlite_functions(engine: Engine) -> None:
    """Register ``regexp`` on every new connection of a SQLite ``engine`` (idempotent; no-op
    for other dialects).  Call it right after creating the engine: connections already in
    the pool keep what they had."""
    if engine.dialect.name != "sqlite":
        return
    if not event.contains(engine, "connect", _register):
        event.listen(engine, "connect", _register)
