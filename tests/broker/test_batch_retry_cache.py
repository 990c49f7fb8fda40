"""Batch runs, the retry policy and the run cache, on real runtimes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from broker.batch import batch_status, cancel_batch, plan_batch, submit_batch
from broker.jobs import JobRequest, create_job
from catalog.catalog import Catalog
from catalog.models import Job, JobState
from tests.broker.automation_helpers import drain
from tests.broker.conftest_broker import broker_settings


def _sessions(cat: Catalog, tmp_path: Path, count: int, ambiguous: set[int]) -> None:
    root = tmp_path / "tree"
    for n in range(count):
        acq = root / f"sub-{n:02d}" / "ses-1" / "anat"
        acq.mkdir(parents=True)
        (acq / "t1.nii.gz").write_text(f"subject {n}")
        if n in ambiguous:
            (acq / "t1_rerun.nii.gz").write_text(f"again {n}")
    cat.upload([root], "lab/study")


def _jobs(cat: Catalog, **where: Any) -> list[Job]:
    with cat.db.session(readonly=True) as session:
        stmt = select(Job).order_by(Job.id)
        for key, value in where.items():
            stmt = stmt.where(getattr(Job, key) == value)
        return list(session.scalars(stmt))


def test_batch_plan_run_and_cancel(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
) -> None:
    catalog.create_group("lab")
    catalog.create_project("lab", "study")
    _sessions(catalog, tmp_path, 50, ambiguous={7, 21, 42})
    plan = plan_batch(catalog, 'acquisition.label = "anat"', "acquisition", {"infile": "*.nii.gz"})
    skipped = [row.path for row in plan if not row.ok]
    assert len(plan) == 50 and len(skipped) == 3
    assert {p.split("/")[2] for p in skipped} == {"sub-07", "sub-21", "sub-42"}
    assert "2 files match" in next(r for r in plan if not r.ok).problems[0]
    ref = install_test_gear()
    batch = submit_batch(catalog, ref, plan, {"sleep": 1})
    _batch, counts = batch_status(catalog, batch.id)
    assert counts == {"pending": 47}
    settings = broker_settings(tmp_path, db_url, store_url, "bwrap", bwrap_rootfs)
    runner = threading.Thread(target=drain, args=(catalog, settings, 180))
    runner.start()
    deadline = time.monotonic() + 120
    while batch_status(catalog, batch.id)[1].get("complete", 0) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cancelled = cancel_batch(catalog, batch.id)
    runner.join(timeout=180)
    assert not runner.is_alive()
    _batch, counts = batch_status(catalog, batch.id)
    assert set(counts) <= {"complete", "cancelled"}
    assert sum(counts.values()) == 47 and counts["complete"] >= 5
    # every job still waiting was cancelled; a running one may finish before its stop lands
    in_flight = 4 * 4  # broker_settings: max_concurrent 4, four claims in flight per slot
    assert cancelled - in_flight <= counts["cancelled"] <= cancelled


TRANSIENT_THEN_OK = r"""
attempt=$(grep -o '"attempt": *[0-9]*' /flywheel/v0/config.json | grep -o '[0-9]*$')
echo "attempt $attempt"
[ "$attempt" -ge 3 ] || exit 75
echo ok > /flywheel/v0/output/done.txt
"""


def test_transient_failures_retry_until_success(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
) -> None:
    ref = install_test_gear(
        command=TRANSIENT_THEN_OK,
        flywheel={"show-job": True},
        gearbroker={
            "exit-codes": {"transient": [75], "bad-input": [2]},
            "retry": {"max-retries": 3, "backoff": 0},
        },
    )
    create_job(catalog, JobRequest(ref, {"infile": sample_file}))
    drain(catalog, broker_settings(tmp_path, db_url, store_url, "bwrap", bwrap_rootfs))
    jobs = _jobs(catalog)
    assert [(j.attempt, j.state, j.exit_code) for j in jobs] == [
        (1, "failed", 75),
        (2, "failed", 75),
        (3, "complete", 0),
    ]
    assert [j.previous_job_id for j in jobs] == [None, jobs[0].id, jobs[1].id]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_bad_input_is_never_retried(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
) -> None:
    ref = install_test_gear(
        gearbroker={
            "exit-codes": {"transient": [75], "bad-input": [2]},
            "retry": {"max-retries": 5, "backoff": 0},
        }
    )
    create_job(catalog, JobRequest(ref, {"infile": sample_file}, {"exit_code": 2}))
    drain(catalog, broker_settings(tmp_path, db_url, store_url, "bwrap", bwrap_rootfs))
    assert [(j.attempt, j.state, j.reason) for j in _jobs(catalog)] == [(1, "failed", "exit_code")]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_oom_retry_gets_more_memory(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    podman_engine: object,
) -> None:
    """48 MB of newline-free input fills busybox tail's buffer: over 32 MB, under 128 MB."""
    ref = install_test_gear(
        command="head -c 48m /dev/zero | tail > /dev/null",
        gearbroker={"resources": {"memory": "32MB"}},
    )
    create_job(catalog, JobRequest(ref, {"infile": sample_file}))
    settings = broker_settings(tmp_path, db_url, store_url, "podman")
    settings.values["broker.oom_memory_factor"] = 4.0
    drain(catalog, settings)
    jobs = _jobs(catalog)
    assert len(jobs) == 2, [(j.state, j.reason, j.reason_detail, j.options) for j in jobs]
    first, second = jobs
    assert (first.state, first.reason) == ("failed", "out_of_memory")
    assert first.options["resources"]["memory_mb"] == 32
    assert (second.state, second.attempt) == ("complete", 2)
    assert second.options["resources"]["memory_mb"] == 128


def _acquisitions(cat: Catalog, tmp_path: Path, count: int) -> None:
    cat.create_group("lab")
    cat.create_project("lab", "study")
    _sessions(cat, tmp_path, count, ambiguous=set())


def test_cache_skips_identical_work(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
) -> None:
    _acquisitions(catalog, tmp_path, 5)
    ref = install_test_gear()
    settings = broker_settings(tmp_path, db_url, store_url, "bwrap", bwrap_rootfs)

    def run_batch(config: dict[str, Any]) -> list[Job]:
        plan = plan_batch(catalog, "", "acquisition", {"infile": "*.nii.gz"})
        batch = submit_batch(catalog, ref, plan, config)
        drain(catalog, settings)
        return _jobs(catalog, batch_id=batch.id)

    first = run_batch({"message": "a"})
    assert all(j.state == JobState.COMPLETE and j.reason is None for j in first)
    second = run_batch({"message": "a"})
    assert all(j.reason == "cached" and j.external_id is None for j in second)
    assert len(list((tmp_path / "jobs").iterdir())) == 5  # not one container more
    for old, new in zip(first, second, strict=True):
        assert new.provenance is not None and new.provenance["cached_from"]["job_id"] == old.id
        old_out = {o["name"]: o["sha256"] for o in old.provenance["outputs"]}  # type: ignore[index]
        assert {o["name"]: o["sha256"] for o in new.provenance["outputs"]} == old_out
    # one changed input reruns exactly that container; a changed config reruns all
    src = tmp_path / "t1.nii.gz"
    src.write_text("changed")
    catalog.upload([src], "lab/study/sub-03/ses-1/anat")
    third = run_batch({"message": "a"})
    assert sorted(j.reason or "ran" for j in third) == ["cached"] * 4 + ["ran"]
    fourth = run_batch({"message": "b"})
    assert [j.reason for j in fourth] == [None] * 5
    # --no-cache forces a run
    plan = plan_batch(catalog, "", "acquisition", {"infile": "*.nii.gz"})
    batch = submit_batch(catalog, ref, plan, {"message": "b"}, options={"no_cache": True})
    drain(catalog, settings)
    assert [j.reason for j in _jobs(catalog, batch_id=batch.id)] == [None] * 5


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("reason", ["cached"])
def test_cached_result_keeps_metadata(
    reason: str,
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
) -> None:
    ref = install_test_gear()
    settings = broker_settings(tmp_path, db_url, store_url, "bwrap", bwrap_rootfs)
    for _ in range(2):
        create_job(catalog, JobRequest(ref, {"infile": sample_file}))
        drain(catalog, settings)
    jobs = _jobs(catalog)
    assert len(jobs) == 2, [(j.state, j.reason, j.reason_detail, j.options) for j in jobs]
    first, second = jobs
    assert second.reason == reason
    analysis = catalog.path_of(catalog.get(f"<id:{second.destination_id}>"))
    assert catalog.info_get(analysis) == {"checked": True}
    result = catalog.get(f"{analysis}/files/result.txt")
    assert (result.type, result.tags) == ("text", ["gb-test"])
    assert (
        result.sha256
        == catalog.get(
            f"{catalog.path_of(catalog.get(f'<id:{first.destination_id}>'))}/files/result.txt"
        ).sha256
    )
