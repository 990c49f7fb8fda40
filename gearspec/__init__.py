"""Flywheel-compatible gear manifests: validation, config, run staging, outputs, builders.

Entry points: :func:`gearspec.manifest.load_manifest`, :func:`gearspec.staging.stage_run`,
:func:`gearspec.metadata.load_metadata`; errors live in :mod:`gearspec.errors`.
"""

from __future__ import annotations
