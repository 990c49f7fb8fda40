"""Typed values for backend site tables (``[backends.slurm]``, ``[backends.kubernetes]``).

Values arrive as TOML types from the config file or as strings from environment variables;
both convert to a field's kind here, or raise ConfigError naming the key.
"""

from __future__ import annotations

import json
from typing import Any

from catalog.errors import ConfigError

_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def string_list(where: str, value: Any) -> tuple[str, ...]:
    """A list of strings, from a list, a JSON list, or a comma-separated string."""
    if isinstance(value, str):
        text = value.strip()
        try:
            items = json.loads(text) if text.startswith("[") else text.split(",")
        except ValueError as exc:
            raise ConfigError(f"{where} is not a JSON list: {exc}") from exc
        value = [item.strip() if isinstance(item, str) else item for item in items]
        value = [item for item in value if item != ""]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(value)


def number(where: str, value: Any, kind: type[int] | type[float]) -> int | float:
    """An int or float from a number or a numeric string (booleans are refused)."""
    if not isinstance(value, bool):
        try:
            if isinstance(value, str):
                return kind(value.strip())
            if kind is int and isinstance(value, int):
                return value
            if kind is float and isinstance(value, int | float):
                return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{where} must be {'an integer' if kind is int else 'a number'}")


def convert(where: str, kind: str, value: Any) -> Any:
    """``value`` as the field annotation ``kind`` says (tuple of str, bool, int, float, str)."""
    if "tuple" in kind:
        return string_list(where, value)
    if kind.startswith("bool"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL:
            return _BOOL[value.strip().lower()]
        raise ConfigError(f"{where} must be true or false")
    if kind.startswith("int"):
        return number(where, value, int)
    if kind.startswith("float"):
        return float(number(where, value, float))
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    return value
