"""Shared pieces of the automation tests: a classifier gear and a dispatcher drain loop."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select

from broker.config import Settings
from broker.wiring import make_dispatcher
from catalog.catalog import Catalog
from catalog.gears import install_gear
from catalog.models import Job, JobState, RuleTrigger
from gearspec.examples import example_gear
from gearspec.manifest import load_manifest
from tests.fixtures.gears import gear_manifest

CLASSIFY = r"""
cd /flywheel/v0
name=$(ls input/dicom)
echo "classifying $name"
printf '{"acquisition": {"files": [{"name": "%s", "modality": "MR", "classification": {"Intent": ["Structural"], "Measurement": ["T1"]}}]}}' "$name" > output/.metadata.json
"""


def install_classifier(cat: Catalog) -> str:
    doc: dict[str, Any] = gear_manifest(
        name="test-classifier", command=CLASSIFY, category="classifier"
    )
    doc["inputs"] = {"dicom": {"base": "file", "type": {"enum": ["dicom"]}}}
    doc["config"] = {}
    manifest = load_manifest(doc)
    install_gear(cat, manifest.to_dict(), manifest.manifest_hash(), manifest.image)
    return f"{manifest.name}:{manifest.version}"


def install_dcm2niix(cat: Catalog) -> str:
    manifest = load_manifest(example_gear("dcm2niix"))
    install_gear(cat, manifest.to_dict(), manifest.manifest_hash(), manifest.image)
    return f"{manifest.name}:{manifest.version}"


def drain(cat: Catalog, settings: Settings, timeout: float = 120) -> None:
    """Run a dispatcher until no trigger is queued and every job has ended."""
    dispatcher = make_dispatcher(cat, settings)
    dispatcher.acquire()
    deadline = time.monotonic() + timeout
    try:
        dispatcher.reconcile()
        while True:
            busy = dispatcher.step()
            with cat.db.session(readonly=True) as session:
                triggers = session.scalar(select(func.count()).select_from(RuleTrigger))
                open_jobs = session.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.state.not_in([s.value for s in JobState if s.terminal]))
                )
            if not triggers and not open_jobs:
                return
            assert time.monotonic() < deadline, f"{open_jobs} job(s) still open"
            if not busy:
                time.sleep(0.1)
    finally:
        dispatcher.close()
