"""Checking and parsing single config values against a manifest ``config`` spec.

A config spec is a small JSON-schema snippet: ``type`` (string, integer, number, boolean,
array), ``enum``, ``minimum``/``maximum``, ``exclusiveMinimum``/``exclusiveMaximum``
(draft-04 booleans or draft-06+ numbers, both as Flywheel gears use them),
``multipleOf``, ``pattern``, ``minLength``/``maxLength``, ``items``,
``minItems``/``maxItems``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from gearspec.errors import Issue, child

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def type_matches(kind: object, value: object) -> bool:
    """Whether ``value`` is a JSON value of config type ``kind`` (booleans are not numbers)."""
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if kind == "integer":
        return isinstance(value, int) or value.is_integer()
    return kind == "number"


def _json_equal(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def check_value(spec: Mapping[str, Any], value: object, path: str) -> list[Issue]:
    """Every way ``value`` breaks the config ``spec``; an empty list when it fits."""
    kind = spec.get("type")
    if not type_matches(kind, value):
        return [Issue(path, f"expected {kind}, got {type(value).__name__} {value!r}")]
    issues: list[Issue] = []
    enum = spec.get("enum")
    if isinstance(enum, list) and not any(_json_equal(value, e) for e in enum):
        issues.append(Issue(path, f"{value!r} is not one of {enum!r}"))
    if kind in ("integer", "number"):
        assert isinstance(value, int | float)
        issues.extend(_check_number(spec, value, path))
    elif kind == "string":
        assert isinstance(value, str)
        issues.extend(_check_string(spec, value, path))
    elif kind == "array":
        assert isinstance(value, list)
        issues.extend(_check_array(spec, value, path))
    return issues


def _check_number(spec: Mapping[str, Any], value: float, path: str) -> list[Issue]:
    issues: list[Issue] = []
    low, high = _num(spec.get("minimum")), _num(spec.get("maximum"))
    ex_low, ex_high = spec.get("exclusiveMinimum"), spec.get("exclusiveMaximum")
    if low is not None and (value <= low if ex_low is True else value < low):
        issues.append(Issue(path, f"{value!r} is below the minimum {low!r}"))
    if high is not None and (value >= high if ex_high is True else value > high):
        issues.append(Issue(path, f"{value!r} is above the maximum {high!r}"))
    bound = _num(ex_low)
    if bound is not None and value <= bound:
        issues.append(Issue(path, f"{value!r} must be greater than {bound!r}"))
    bound = _num(ex_high)
    if bound is not None and value >= bound:
        issues.append(Issue(path, f"{value!r} must be less than {bound!r}"))
    step = _num(spec.get("multipleOf"))
    if step is not None and step > 0:
        ratio = value / step
        if not math.isclose(ratio, round(ratio), rel_tol=1e-9, abs_tol=1e-9):
            issues.append(Issue(path, f"{value!r} is not a multiple of {step!r}"))
    return issues


def _num(x: object) -> float | None:
    """``x`` when it is a JSON number (not a boolean), else None."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return x


def _check_string(spec: Mapping[str, Any], value: str, path: str) -> list[Issue]:
    issues: list[Issue] = []
    low, high = spec.get("minLength"), spec.get("maxLength")
    if isinstance(low, int) and len(value) < low:
        issues.append(Issue(path, f"shorter than {low} characters"))
    if isinstance(high, int) and len(value) > high:
        issues.append(Issue(path, f"longer than {high} characters"))
    pattern = spec.get("pattern")
    if isinstance(pattern, str):
        try:
            matched = re.search(pattern, value) is not None
        except re.error as exc:
            return [*issues, Issue(path, f"pattern {pattern!r} does not compile: {exc}")]
        if not matched:
            issues.append(Issue(path, f"{value!r} does not match {pattern!r}"))
    return issues


def _check_array(spec: Mapping[str, Any], value: list[Any], path: str) -> list[Issue]:
    issues: list[Issue] = []
    low, high = spec.get("minItems"), spec.get("maxItems")
    if isinstance(low, int) and len(value) < low:
        issues.append(Issue(path, f"fewer than {low} items"))
    if isinstance(high, int) and len(value) > high:
        issues.append(Issue(path, f"more than {high} items"))
    items = spec.get("items")
    if isinstance(items, Mapping) and "type" in items:
        for index, item in enumerate(value):
            issues.extend(check_value(items, item, child(path, index)))
    return issues


def coerce_cli_value(spec: Mapping[str, Any], text: str) -> Any:
    """Turn a ``key=value`` command-line string into the JSON value ``spec`` expects.

    Booleans take true/false/yes/no/on/off/1/0; arrays take a JSON list or a comma-separated
    list whose items are coerced by ``items``.  Raises ValueError when the text cannot be
    read as that type (range and enum checks are left to :func:`check_value`).
    """
    kind = spec.get("type")
    if kind == "string":
        return text
    if kind == "boolean":
        word = text.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(f"not a boolean: {text!r}")
    if kind == "integer":
        return int(text.strip())
    if kind == "number":
        try:
            return int(text.strip())
        except ValueError:
            return float(text.strip())
    if kind == "array":
        if text.strip().startswith("["):
            loaded = json.loads(text)
            if not isinstance(loaded, list):
                raise ValueError(f"not a JSON list: {text!r}")
            return loaded
        items = spec.get("items") if isinstance(spec.get("items"), Mapping) else {}
        parts = [p for p in text.split(",") if p != ""]
        return [coerce_cli_value(items or {"type": "string"}, part) for part in parts]
    raise ValueError(f"config type {kind!r} cannot be given on the command line")
