"""Helpers for end-to-end broker tests: settings for a test catalog and a job runner."""

from __future__ import annotations

from pathlib import Path

from broker.config import Settings, load_settings
from broker.jobs import JobRequest, create_job, get_job
from broker.wiring import make_dispatcher
from catalog.catalog import Catalog
from catalog.models import Job


def broker_settings(
    tmp_path: Path,
    db_url: str,
    store_url: str,
    runtime: str,
    bwrap_rootfs: Path | None = None,
    extra: str = "",
) -> Settings:
    """Settings (through a real TOML file) pointing at the test catalog and runtime."""
    lines = [
        "[catalog]",
        f'database = "{db_url}"',
        f'store = "{store_url}"',
        f'data_dir = "{tmp_path / "data"}"',
        "[broker]",
        f'work_dir = "{tmp_path / "jobs"}"',
        f'runtime = "{runtime}"',
        "poll_interval = 0.2",
        "max_concurrent = 4",
    ]
    if bwrap_rootfs is not None:
        lines += [
            "[runtimes.bwrap.images]",
            f'"localhost/gearbroker/busybox:1" = "{bwrap_rootfs}"',
            f'"localhost/gearbroker/dcm2niix:1" = "{bwrap_rootfs.parent / "dcm2niix"}"',
        ]
    config = tmp_path / "config.toml"
    config.write_text("\n".join(lines) + "\n" + extra)
    return load_settings(path=config, env={"GEARBROKER_USER": "admin", "HOME": str(tmp_path)})


def run_to_end(cat: Catalog, settings: Settings, request: JobRequest, timeout: float = 180) -> Job:
    """Create the job and serve it with an in-process dispatcher until it ends."""
    job = create_job(cat, request)
    serve(cat, settings, job.id, timeout)
    return get_job(cat, job.id)


def serve(cat: Catalog, settings: Settings, job_id: int, timeout: float = 180) -> None:
    make_dispatcher(cat, settings).serve(only={job_id}, timeout=timeout)
