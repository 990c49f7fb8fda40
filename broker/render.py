"""What a backend would submit for a job: ``gearbroker render`` and ``run --dry-run``."""

from __future__ import annotations

from broker.config import Settings
from broker.jobs import JobRequest, get_job
from broker.runtimes.base import ContainerRuntime
from broker.runtimes.native import NativeRuntime
from broker.staging import job_dir, task_for
from broker.wiring import backend_factory, runtime_factory
from catalog.catalog import Catalog
from catalog.gears import get_gear
from catalog.models import Job
from gearspec.manifest import load_manifest


def render_job(cat: Catalog, settings: Settings, job_id: int) -> str:
    job = get_job(cat, job_id)
    return _render(settings, job)


def render_request(cat: Catalog, settings: Settings, request: JobRequest) -> str:
    """Render a request without creating the job (it is validated like a real one)."""
    from broker.jobs import validate_request

    validate_request(cat, request)
    gear = get_gear(cat, request.gear)
    job = Job(
        id=0,
        attempt=1,
        gear_id=gear.id,
        created_by=cat.actor.username,
        backend=request.backend,
        runtime=request.runtime,
        config=request.config,
        inputs={},
        options={},
    )
    job.gear = gear
    return _render(settings, job)


def _render(settings: Settings, job: Job) -> str:
    manifest = load_manifest(job.gear.manifest)
    task = task_for(job, job.gear, manifest, job_dir(settings.work_dir, job))
    backend = backend_factory(settings)(job.backend)
    runtime: ContainerRuntime
    if backend.runtimes is not None and not backend.runtimes:
        runtime = NativeRuntime()
    else:
        preferred = manifest.preferred_runtime or backend.default_runtime
        runtime = runtime_factory(settings)(job.runtime, preferred)
    try:
        return backend.render(task, runtime)
    finally:
        backend.close()
