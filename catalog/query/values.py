"""Typing of query literals for a field: numbers, timestamps, text and regular expressions.

Conversion errors raise :class:`QuerySyntaxError` pointing at the literal.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from catalog.query.lexer import QuerySyntaxError
from catalog.query.parser import Field, Value

#: Largest magnitude SQLite binds as an integer; larger integers are compared as floats.
_INT64 = 2**63 - 1


def number(value: Value, field: Field, query: str) -> int | float:
    """The literal as a number; an error unless it spells one."""
    if value.kind in ("number", "string", "word") and value.looks_numeric:
        num = Value("number", value.raw.strip(), value.pos).number
        if isinstance(num, int) and abs(num) > _INT64:
            return float(num)
        return num
    raise QuerySyntaxError(f"{field.text} needs a number, not {value.raw!r}", query, value.pos)


def text(value: Value, field: Field, query: str) -> str:
    """The literal as text (numbers and words as typed: ``001`` stays ``001``)."""
    if value.kind == "null":
        raise QuerySyntaxError(f"null cannot be used here with {field.text}", query, value.pos)
    return value.raw


def regex(value: Value, field: Field, query: str) -> str:
    """A regular expression, checked with Python's ``re`` (use the subset PostgreSQL shares)."""
    pattern = text(value, field, query)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise QuerySyntaxError(f"invalid regular expression: {exc}", query, value.pos) from exc
    return pattern


def timestamp(value: Value, field: Field, query: str) -> tuple[datetime, datetime | None]:
    """An ISO date or date-time as UTC; returns (start, end) where ``end`` is the next day's
    midnight for a bare date (the literal stands for the whole day) and None otherwise."""
    raw = value.raw.strip()
    if value.kind in ("string", "word", "number"):
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            pass
        else:
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start, start + timedelta(days=1)
        try:
            stamp = datetime.fromisoformat(raw)
        except ValueError:
            pass
        else:
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)
            return stamp.astimezone(UTC), None
    raise QuerySyntaxError(
        f"{field.text} needs an ISO date or time such as 2024-05-01 or 2024-05-01T12:00:00Z, "
        f"not {value.raw!r}",
        query,
        value.pos,
    )
