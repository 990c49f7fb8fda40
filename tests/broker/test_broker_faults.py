"""Broker faults: a dispatcher killed mid-run, cancellation, the SQLite dispatcher lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import broker.starting
from broker.dispatch import DispatcherBusyError
from broker.jobs import JobRequest, cancel_job, create_job, get_job
from broker.wiring import make_dispatcher
from catalog.catalog import Catalog
from catalog.models import JobState
from tests.broker.conftest_broker import broker_settings, serve

DISPATCHER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from broker.config import load_settings
    from broker.wiring import make_dispatcher
    from catalog.catalog import Catalog
    settings = load_settings(path=Path(sys.argv[1]), env={"GEARBROKER_USER": "admin"})
    cat = Catalog.open(settings.database_url, settings.store_url, "admin")
    make_dispatcher(cat, settings).serve()
    """
)


def _wait_state(cat: Catalog, job_id: int, state: JobState, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while get_job(cat, job_id).state != state:
        assert time.monotonic() < deadline, f"job {job_id} never became {state}"
        time.sleep(0.1)


def test_dispatcher_killed_mid_run_and_restarted(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
) -> None:
    settings = broker_settings(tmp_path, db_url, store_url, "bwrap", bwrap_rootfs)
    job = create_job(
        catalog, JobRequest(install_test_gear(), {"infile": sample_file}, {"sleep": 3})
    )
    proc = subprocess.Popen([sys.executable, "-c", DISPATCHER, str(tmp_path / "config.toml")])
    try:
        _wait_state(catalog, job.id, JobState.RUNNING)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert get_job(catalog, job.id).state == JobState.RUNNING
    serve(catalog, settings, job.id, timeout=60)
    final = get_job(catalog, job.id)
    assert final.state == JobState.COMPLETE, final.reason_detail
    assert [e.to_state for e in final.events].count("running") == 1
    log = catalog.blobs.open(final.log_sha256).read().decode()  # type: ignore[arg-type]
    assert log.count("start job") == 1  # the gear ran exactly once


def test_cancel_running_job_stops_the_container(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    podman_engine: Any,
) -> None:
    settings = broker_settings(tmp_path, db_url, store_url, "podman")
    job = create_job(
        catalog, JobRequest(install_test_gear(), {"infile": sample_file}, {"sleep": 120})
    )
    thread = threading.Thread(target=serve, args=(catalog, settings, job.id, 120))
    started = time.monotonic()
    thread.start()
    _wait_state(catalog, job.id, JobState.RUNNING)
    cancel_job(catalog, job.id)
    thread.join(timeout=90)
    assert not thread.is_alive()
    final = get_job(catalog, job.id)
    assert (final.state, final.reason) == (JobState.CANCELLED, "cancelled")
    assert final.events[-1].detail.get("by") == "admin"
    assert time.monotonic() - started < 60
    names = subprocess.run(
        [podman_engine.binary, "ps", "-a", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **podman_engine.env},
    ).stdout.split()
    assert f"gb-job-{job.id}-1" not in names


def test_cancel_during_staging(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = broker_settings(tmp_path, db_url, store_url, "bwrap", bwrap_rootfs)
    job = create_job(catalog, JobRequest(install_test_gear(), {"infile": sample_file}))
    real_stage = broker.starting.stage_job

    def stage_then_cancel(*args: Any, **kwargs: Any) -> Any:
        task = real_stage(*args, **kwargs)
        cancel_job(catalog, job.id)  # the user cancels while inputs are being staged
        return task

    monkeypatch.setattr(broker.starting, "stage_job", stage_then_cancel)
    serve(catalog, settings, job.id, timeout=30)
    final = get_job(catalog, job.id)
    assert (final.state, final.reason, final.external_id) == (JobState.CANCELLED, "cancelled", None)
    assert not (tmp_path / "jobs" / f"{job.id}-1").exists()


def test_one_dispatcher_per_sqlite_catalog(tmp_path: Path, store_url: str) -> None:
    db_url = f"sqlite:///{tmp_path / 'c.db'}"
    cat = Catalog.initialize(db_url, store_url, "admin")
    settings = broker_settings(tmp_path, db_url, store_url, "bwrap")
    first = make_dispatcher(cat, settings)
    first.acquire()
    try:
        with pytest.raises(DispatcherBusyError, match="one at a time"):
            make_dispatcher(cat, settings).acquire()
    finally:
        first.close()
    second = make_dispatcher(cat, settings)
    second.acquire()  # released with the first
    second.close()
    cat.close()
