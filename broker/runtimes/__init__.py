"""Container runtimes: one module per engine, chosen by name through the registry."""

from __future__ import annotations

from broker.runtimes.registry import DEFAULT_PREFERENCE, RUNTIMES, detect_runtime, make_runtime

__all__ = ["DEFAULT_PREFERENCE", "RUNTIMES", "detect_runtime", "make_runtime"]
