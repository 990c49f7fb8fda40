"""Dotted-key access to nested ``info`` dictionaries (``a.b.c``)."""

from __future__ import annotations

import copy
import json
from typing import Any

from catalog.errors import InvalidInputError, NotFoundError


def split_key(key: str) -> list[str]:
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise InvalidInputError(f"invalid info key {key!r}")
    return parts


def parse_value(raw: str) -> Any:
    """A JSON value when ``raw`` parses as JSON, else the raw string (so ``NaN`` and
    ``Infinity``, which Python's parser accepts but JSON has not, stay strings)."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except ValueError:
        return raw


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def get_key(info: dict[str, Any], key: str) -> Any:
    node: Any = info
    for part in split_key(key):
        if not isinstance(node, dict) or part not in node:
            raise NotFoundError(f"info key {key!r} is not set")
        node = node[part]
    return node


def set_key(info: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``info`` with ``key`` set (intermediate objects created)."""
    out = copy.deepcopy(info)
    parts = split_key(key)
    node = out
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            if child is not None:
                raise InvalidInputError(
                    f"info key {part!r} in {key!r} holds a value, not an object"
                )
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value
    return out


def delete_key(info: dict[str, Any], key: str) -> dict[str, Any]:
    """A copy of ``info`` without ``key``; NotFoundError if it was not set."""
    out = copy.deepcopy(info)
    parts = split_key(key)
    node: Any = out
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            raise NotFoundError(f"info key {key!r} is not set")
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        raise NotFoundError(f"info key {key!r} is not set")
    del node[parts[-1]]
    return out
