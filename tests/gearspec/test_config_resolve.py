"""Config resolution and command-line value coercion."""

from __future__ import annotations

from typing import Any

import pytest

from gearspec.config_resolve import config_defaults, resolve_config
from gearspec.errors import InvocationError
from gearspec.manifest import load_manifest
from gearspec.values import check_value, coerce_cli_value
from tests.gearspec.helpers import load_json, minimal_manifest


def test_defaults_fill_in_and_optional_keys_stay_out() -> None:
    manifest = load_manifest(minimal_manifest())
    assert resolve_config(manifest, {}) == {"threshold": 0.5, "mode": "fast"}
    assert resolve_config(manifest, {"label": "x", "mode": "slow"}) == {
        "threshold": 0.5,
        "mode": "slow",
        "label": "x",
    }
    assert config_defaults(manifest) == {"threshold": 0.5, "mode": "fast"}


def test_all_config_problems_reported_together() -> None:
    doc = minimal_manifest()
    doc["config"]["needed"] = {"type": "integer"}
    manifest = load_manifest(doc)
    with pytest.raises(InvocationError) as caught:
        resolve_config(manifest, {"threshold": "high", "mode": "medium", "bogus": 1})
    assert {(i.path, i.message.split(" ")[0]) for i in caught.value.issues} == {
        ("$.config.bogus", "unknown"),
        ("$.config.mode", "'medium'"),
        ("$.config.needed", "required"),
        ("$.config.threshold", "expected"),
    }


@pytest.mark.parametrize(
    ("spec", "value", "ok"),
    [
        ({"type": "integer"}, 3, True),
        ({"type": "integer"}, 3.0, True),
        ({"type": "integer"}, 3.5, False),
        ({"type": "integer"}, True, False),
        ({"type": "number"}, False, False),
        ({"type": "number"}, float("nan"), False),
        ({"type": "boolean"}, 0, False),
        ({"type": "number", "maximum": 100, "exclusiveMaximum": True}, 100, False),
        ({"type": "number", "maximum": 100, "exclusiveMaximum": True}, 99.9, True),
        ({"type": "number", "exclusiveMinimum": 0}, 0, False),
        ({"type": "number", "multipleOf": 0.1}, 0.3, True),
        ({"type": "number", "multipleOf": 10}, 25, False),
        ({"type": "integer", "enum": [1, 2]}, True, False),
        ({"type": "string", "pattern": "^[0-9]{3}-[0-9]{4}$"}, "555-5555", True),
        ({"type": "string", "minLength": 2, "maxLength": 3}, "abcd", False),
        (
            {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 2},
            ["a", "b"],
            True,
        ),
        ({"type": "array", "items": {"type": "string", "enum": ["a", "b"]}}, ["c"], False),
        ({"type": "array", "minItems": 1}, [], False),
    ],
)
def test_check_value(spec: dict[str, Any], value: object, ok: bool) -> None:
    assert (check_value(spec, value, "$.v") == []) is ok


@pytest.mark.parametrize(
    ("spec", "text", "value"),
    [
        ({"type": "string"}, "$(rm -rf /); `id`", "$(rm -rf /); `id`"),
        ({"type": "boolean"}, "Yes", True),
        ({"type": "boolean"}, "0", False),
        ({"type": "integer"}, " 42 ", 42),
        ({"type": "number"}, "2", 2),
        ({"type": "number"}, "0.25", 0.25),
        ({"type": "array", "items": {"type": "integer"}}, "1,2,3", [1, 2, 3]),
        ({"type": "array"}, '["a b", "c"]', ["a b", "c"]),
    ],
)
def test_coerce_cli_value(spec: dict[str, Any], text: str, value: object) -> None:
    assert coerce_cli_value(spec, text) == value


@pytest.mark.parametrize(
    ("spec", "text"),
    [({"type": "boolean"}, "maybe"), ({"type": "integer"}, "1.5"), ({"type": "array"}, "[1,")],
)
def test_coerce_cli_value_rejects(spec: dict[str, Any], text: str) -> None:
    with pytest.raises(ValueError):
        coerce_cli_value(spec, text)


def test_fsl_stats_keys_with_spaces_resolve() -> None:
    manifest = load_manifest(load_json("fsl-stats.json"))
    resolved = resolve_config(manifest, {"Absolute values?": True})
    assert resolved["Absolute values?"] is True
    assert resolved["Mean intensity"] is True
