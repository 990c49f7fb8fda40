"""Shared pytest configuration: every module in tests/fixtures is a fixture plugin."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = [
    f"tests.fixtures.{p.stem}"
    for p in sorted((Path(__file__).parent / "fixtures").glob("*.py"))
    if p.stem != "__init__"
]
