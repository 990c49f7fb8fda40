"""Staging a gear run folder exactly as the Flywheel runtime contract lays it out.

The folder returned by :func:`stage_run` is what a runtime mounts at ``/flywheel/v0``::

    config.json  manifest.json  input/<input>/<file>  output/ (empty)  work/ (empty)

``config.json`` holds ``config``, ``inputs`` (file inputs: ``base``, ``hierarchy``,
``location.path``/``name``, ``object``; context and api-key inputs), ``destination`` and,
when the manifest sets ``custom.flywheel.show-job``, ``job``.  The gear runs
:func:`gear_command` with exactly :func:`gear_environment`; user config never reaches argv
or the environment, only ``config.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from gearspec.config_resolve import check_config
from gearspec.errors import InvocationError, Issue, StagingError
from gearspec.inputs import Hierarchy, InputFile, check_inputs
from gearspec.manifest import Manifest

__all__ = [
    "CONTAINER_LEVELS",
    "DEFAULT_PATH",
    "GEAR_ROOT",
    "Destination",
    "Hierarchy",
    "InputFile",
    "StagedRun",
    "build_config_json",
    "container_input_path",
    "gear_command",
    "gear_environment",
    "stage_run",
]

GEAR_ROOT = PurePosixPath("/flywheel/v0")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONTAINER_LEVELS = ("project", "subject", "session", "acquisition", "analysis")


@dataclass(frozen=True)
class Destination:
    """The container a job writes its outputs to (``type`` is one of CONTAINER_LEVELS)."""

    type: str
    id: str


@dataclass(frozen=True)
class StagedRun:
    """A staged run folder and the argv/environment the container must run with."""

    run_dir: Path
    config: dict[str, Any]
    command: list[str]
    environment: dict[str, str]
    input_paths: dict[str, Path]

    @property
    def config_path(self) -> Path:
        return self.run_dir / "config.json"

    @property
    def manifest_path(self) -> Path:
        return self.run_dir / "manifest.json"

    @property
    def input_dir(self) -> Path:
        return self.run_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.run_dir / "output"

    @property
    def work_dir(self) -> Path:
        return self.run_dir / "work"


def gear_command(manifest: Manifest) -> list[str]:
    """The argv of the gear: ``bash -c <command>`` or ``/flywheel/v0/run``, no arguments."""
    if manifest.command is not None:
        return ["bash", "-c", manifest.command]
    return [str(GEAR_ROOT / "run")]


def gear_environment(manifest: Manifest, path: str = DEFAULT_PATH) -> dict[str, str]:
    """The complete environment of the gear: ``PATH`` plus the manifest's ``environment``."""
    return {"PATH": path, **manifest.environment}


def container_input_path(input_name: str, file_name: str) -> str:
    """Where a staged input file is seen inside the container."""
    return str(GEAR_ROOT / "input" / input_name / file_name)


def build_config_json(
    manifest: Manifest,
    config: Mapping[str, Any],
    inputs: Sequence[InputFile],
    destination: Destination,
    *,
    job: Mapping[str, Any] | None = None,
    contexts: Mapping[str, Any] | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """The ``config.json`` document for a run; raises :class:`InvocationError` listing
    every problem with the config, the inputs, the destination or the job.

    ``contexts`` gives values for ``context`` inputs (``found`` is false for missing ones);
    ``api-key`` inputs are written only when ``api_key`` is given.
    """
    resolved, issues = check_config(manifest, config)
    issues.extend(check_inputs(manifest, inputs))
    if destination.type not in CONTAINER_LEVELS or not destination.id:
        issues.append(Issue("$.destination", f"bad destination {destination!r}"))
    if manifest.show_job and (job is None or "id" not in job):
        issues.append(Issue("$.job", "the gear sets custom.flywheel.show-job: a job id is needed"))
    if issues:
        raise InvocationError(sorted(issues), source=f"run of gear {manifest.name}")
    doc: dict[str, Any] = {
        "config": resolved,
        "inputs": _inputs_block(manifest, inputs, contexts or {}, api_key),
        "destination": {"type": destination.type, "id": destination.id},
    }
    if manifest.show_job and job is not None:
        doc["job"] = dict(job)
    return doc


def _inputs_block(
    manifest: Manifest,
    inputs: Sequence[InputFile],
    contexts: Mapping[str, Any],
    api_key: str | None,
) -> dict[str, Any]:
    block: dict[str, Any] = {}
    for item in inputs:
        block[item.name] = {
            "base": "file",
            "hierarchy": (
                {"type": item.hierarchy.type, "id": item.hierarchy.id} if item.hierarchy else None
            ),
            "location": {
                "path": container_input_path(item.name, item.staged_name),
                "name": item.staged_name,
            },
            "object": item.object_fields(),
        }
    for name, spec in manifest.inputs.items():
        if spec.base == "context":
            found = name in contexts
            block[name] = {"base": "context", "found": found}
            if found:
                block[name]["value"] = contexts[name]
        elif spec.base == "api-key" and api_key is not None:
            block[name] = {"base": "api-key", "key": api_key}
    return block


def stage_run(
    manifest: Manifest,
    config: Mapping[str, Any],
    inputs: Sequence[InputFile],
    destination: Destination,
    run_dir: Path,
    *,
    job: Mapping[str, Any] | None = None,
    contexts: Mapping[str, Any] | None = None,
    api_key: str | None = None,
    link: bool = True,
    path: str = DEFAULT_PATH,
) -> StagedRun:
    """Check the invocation, then create and fill ``run_dir`` (absent or empty).

    Input files are hard-linked when ``link`` and the filesystem allow it, else copied;
    mount ``input/`` read-only if the sources must stay untouched.  Nothing is written
    when the invocation is invalid (:class:`InvocationError`); filesystem failures raise
    :class:`StagingError`.
    """
    doc = build_config_json(
        manifest, config, inputs, destination, job=job, contexts=contexts, api_key=api_key
    )
    run_dir = Path(run_dir)
    try:
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise StagingError(f"run folder {run_dir} exists and is not an empty folder")
        for sub in ("input", "output", "work"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        input_paths = {item.name: _place_input(run_dir / "input", item, link) for item in inputs}
        _write_json(run_dir / "manifest.json", manifest.to_dict())
        _write_json(run_dir / "config.json", doc)
    except OSError as exc:
        raise StagingError(f"cannot stage run folder {run_dir}: {exc}") from exc
    return StagedRun(
        run_dir=run_dir,
        config=doc,
        command=gear_command(manifest),
        environment=gear_environment(manifest, path),
        input_paths=input_paths,
    )


def _place_input(input_root: Path, item: InputFile, link: bool) -> Path:
    folder = input_root / item.name
    folder.mkdir()
    target = folder / item.staged_name
    if target.resolve().parent != folder.resolve():
        raise StagingError(f"input file name {item.staged_name!r} escapes its folder")
    if link:
        try:
            os.link(item.source_path, target)
            return target
        except OSError:
            pass  # another filesystem or links not permitted: copy instead
    shutil.copy2(item.source_path, target)
    return target


def _write_json(path: Path, doc: object) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
