"""Errors the backends raise on purpose."""

from __future__ import annotations

from catalog.errors import GearbrokerError


class BackendError(GearbrokerError):
    """A backend cannot submit, track or cancel a task."""
