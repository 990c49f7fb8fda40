"""Ordering of gear version strings by semantic version, not upload time.

Handles SemVer (``1.10.0`` > ``1.9.2``, ``1.0.0-rc.1`` < ``1.0.0``) and Flywheel's compound
versions (``0.3.2_1.2.0``: gear version, underscore, wrapped tool version).
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\d+|[A-Za-z]+")


def _tokens(text: str) -> tuple[tuple[int, int, str], ...]:
    """Numbers compare numerically and after words (``rc`` < ``1``)."""
    return tuple(
        (1, int(t), "") if t.isdigit() else (0, 0, t.lower()) for t in _TOKEN.findall(text)
    )


def _part_key(part: str) -> tuple[tuple[int, int, str], ...]:
    release, _, pre = part.partition("-")
    # a pre-release sorts before its release: (0, ...) < (1, ...)
    pre_key = ((0, 0, ""), *_tokens(pre)) if pre else ((1, 0, ""),)
    return (*_tokens(release), (2, 0, ""), *pre_key)


def version_key(version: str) -> tuple[tuple[tuple[int, int, str], ...], ...]:
    """A sort key: compare with ``<``; build metadata after ``+`` is ignored."""
    core = version.strip().lstrip("vV").split("+", 1)[0]
    return tuple(_part_key(part) for part in core.split("_"))
