"""Human-readable output helpers for the CLI."""

from __future__ import annotations

import click

from catalog.catalog import Node


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def print_tree(nodes: list[Node], prefix: str = "") -> None:
    """Print nodes as an indented tree with box-drawing branches."""
    for i, node in enumerate(nodes):
        last = i == len(nodes) - 1
        branch = "└── " if last else "├── "
        if node.kind == "file":
            text = f"{node.label}  ({human_size(node.size or 0)})"
        else:
            text = f"{node.label}/  [{node.kind} {node.id}]"
        click.echo(f"{prefix}{branch}{text}")
        if node.children:
            print_tree(node.children, prefix + ("    " if last else "│   "))
