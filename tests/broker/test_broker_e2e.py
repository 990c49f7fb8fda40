"""Gears run end to end through the broker on real container engines (local Dask backend)."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.jobs import JobRequest
from broker.provenance import provenance_chain
from catalog.catalog import Catalog
from catalog.models import File, JobState
from tests.broker.conftest_broker import broker_settings, run_to_end

HOSTILE = "$(touch /tmp/gb-pwned); `id`; echo 'x' \"y\""


@pytest.fixture(params=["bwrap", "podman", "docker"])
def runtime(request: pytest.FixtureRequest) -> str:
    engine = {"bwrap": "bwrap_rootfs", "podman": "podman_engine", "docker": "docker_engine"}
    request.getfixturevalue(engine[request.param])
    return str(request.param)


def test_gear_runs_end_to_end(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    runtime: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
) -> None:
    settings = broker_settings(tmp_path, db_url, store_url, runtime, bwrap_rootfs)
    ref = install_test_gear()
    job = run_to_end(
        catalog, settings, JobRequest(ref, {"infile": sample_file}, {"message": HOSTILE})
    )
    assert job.state == JobState.COMPLETE, job.reason_detail
    assert job.exit_code == 0
    history = [e.to_state for e in job.events]
    assert history[:2] == ["pending", "queued"] and history[-1] == "complete"
    # outputs landed in the analysis, with .metadata.json applied
    analysis = catalog.path_of(catalog.get(f"<id:{job.destination_id}>"))
    result = catalog.get(f"{analysis}/files/result.txt")
    assert isinstance(result, File)
    assert (result.type, result.info, result.tags) == ("text", {"lines": 1}, ["gb-test"])
    assert result.origin_type == "job" and result.origin_id == str(job.id)
    assert catalog.info_get(analysis) == {"checked": True}
    copy = catalog.get(f"{analysis}/files/scan.txt")
    assert copy.sha256 == catalog.get(sample_file).sha256
    # the config string stayed inert data all the way into the container
    log = b"".join(catalog.blobs.open(job.log_sha256).readlines()).decode()  # type: ignore[arg-type]
    assert f"message: {HOSTILE}" in log
    assert not Path("/tmp/gb-pwned").exists()
    # provenance: on the job, on the analysis, and as a chain from the output file
    prov = job.provenance
    assert prov is not None
    assert prov["gear"]["name"] == "test-echo" and prov["gear"]["manifest_hash"]
    assert prov["runtime"]["name"] == runtime and prov["runtime"]["version"]
    assert prov["backend"] == {"name": "local", "external_id": job.external_id}
    assert prov["inputs"][0]["sha256"] == copy.sha256
    assert {o["name"] for o in prov["outputs"]} == {"scan.txt", "result.txt"}
    assert prov["config"]["message"] == HOSTILE
    assert set(prov["timestamps"]) >= {"pending", "queued", "complete"}
    if runtime != "bwrap":
        assert job.image_digest and job.image_digest.startswith("sha256:")
    chain = provenance_chain(catalog, f"{analysis}/files/result.txt")
    assert chain["job"]["id"] == job.id
    assert chain["job"]["inputs"][0]["path"] == sample_file


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database adds nothing here
@pytest.mark.parametrize(
    ("config", "manifest", "reason", "exit_code"),
    [
        ({"exit_code": 3}, {}, "exit_code", 3),
        ({}, {"command": "echo start job; kill -9 $$"}, "exit_code", 137),
        ({"sleep": 30}, {"gearbroker": {"resources": {"walltime": "2s"}}}, "timeout", None),
    ],
    ids=["exit-3", "sigkill", "walltime"],
)
def test_failures_keep_their_reason(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
    config: dict[str, int],
    manifest: dict[str, object],
    reason: str,
    exit_code: int | None,
) -> None:
    settings = broker_settings(tmp_path, db_url, store_url, "bwrap", bwrap_rootfs)
    ref = install_test_gear(**manifest)
    job = run_to_end(catalog, settings, JobRequest(ref, {"infile": sample_file}, config))
    assert (job.state, job.reason) == (JobState.FAILED, reason)
    if exit_code is not None:
        assert job.exit_code == exit_code
    assert job.log_sha256 is not None
    # a failed job adds no outputs
    with pytest.raises(Exception, match="no file"):
        catalog.get(
            f"{catalog.path_of(catalog.get(f'<id:{job.destination_id}>'))}/files/result.txt"
        )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database adds nothing here
def test_oom_is_reported_with_podman(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    podman_engine: object,
) -> None:
    settings = broker_settings(tmp_path, db_url, store_url, "podman")
    ref = install_test_gear(
        command="head -c 300m /dev/zero | tail", gearbroker={"resources": {"memory": "32MB"}}
    )
    job = run_to_end(catalog, settings, JobRequest(ref, {"infile": sample_file}))
    assert (job.state, job.reason) == (JobState.FAILED, "out_of_memory")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database adds nothing here
def test_huge_log_is_capped(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
) -> None:
    settings = broker_settings(tmp_path, db_url, store_url, "bwrap", bwrap_rootfs)
    job = run_to_end(
        catalog,
        settings,
        JobRequest(install_test_gear(), {"infile": sample_file}, {"log_mb": 2048}),
    )
    assert job.state == JobState.COMPLETE
    assert job.log_sha256 is not None
    size = catalog.blobs.size(job.log_sha256)
    assert size <= 110 * 1024 * 1024
    with catalog.blobs.open(job.log_sha256) as fh:
        head = fh.read(4096).decode()
    assert "start job" in head


@pytest.mark.parametrize("runtime_name", ["bwrap", "podman"])
def test_gear_cannot_write_outside_output(
    request: pytest.FixtureRequest,
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
    runtime_name: str,
) -> None:
    """Inputs, config and manifest are read-only; anything else written outside output/ and
    work/ stays in the container (podman's writable layer) or is refused (bwrap)."""
    if runtime_name == "podman":
        request.getfixturevalue("podman_engine")
    command = (
        "cd /flywheel/v0; for t in input/infile/scan.txt config.json manifest.json newfile "
        "/gb-root-file; do if echo x >> $t 2>/dev/null; then echo WROTE $t; "
        "else echo DENIED $t; fi; done > output/report.txt"
    )
    settings = broker_settings(tmp_path, db_url, store_url, runtime_name, bwrap_rootfs)
    before = catalog.get(sample_file).sha256
    job = run_to_end(
        catalog, settings, JobRequest(install_test_gear(command=command), {"infile": sample_file})
    )
    assert job.state == JobState.COMPLETE
    analysis = catalog.path_of(catalog.get(f"<id:{job.destination_id}>"))
    out = tmp_path / "report.txt"
    catalog.download(f"{analysis}/files/report.txt", out)
    report = out.read_text()
    for target in ("input/infile/scan.txt", "config.json", "manifest.json"):
        assert f"DENIED {target}" in report
    if runtime_name == "bwrap":
        assert "WROTE" not in report
    # nothing reached the host or the catalog except output/
    blob = catalog.blobs.local_path(before)
    assert blob is not None
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == before
    v0 = tmp_path / "jobs" / f"{job.id}-1" / "v0"
    assert sorted(p.name for p in v0.iterdir()) == [
        "config.json",
        "input",
        "manifest.json",
        "output",
        "work",
    ]
    assert not Path("/gb-root-file").exists()
    assert [n.label for n in catalog.tree(analysis)] == ["report.txt"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database adds nothing here
def test_bad_output_names_fail_cleanly(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
) -> None:
    command = (
        "cd /flywheel/v0/output; echo ok > good.txt; ln -s /etc/passwd leak; "
        'printf \'%s\' \'{"analysis": {"files": [{"name": "../escape.txt"}]}}\' '
        "> .metadata.json"
    )
    settings = broker_settings(tmp_path, db_url, store_url, "bwrap", bwrap_rootfs)
    job = run_to_end(
        catalog, settings, JobRequest(install_test_gear(command=command), {"infile": sample_file})
    )
    assert (job.state, job.reason) == (JobState.FAILED, "finalize_error")
    assert "../escape.txt" in (job.reason_detail or "")
    # nothing half-applied, and the job folder is kept for inspection
    analysis = catalog.path_of(catalog.get(f"<id:{job.destination_id}>"))
    assert catalog.tree(analysis) == []
    assert (tmp_path / "jobs" / f"{job.id}-1" / "v0" / "output" / "good.txt").exists()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database adds nothing here
def test_docker_container_is_gone_after_the_run(
    catalog: Catalog,
    install_test_gear: Callable[..., str],
    sample_file: str,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    docker_engine: object,
) -> None:
    settings = broker_settings(tmp_path, db_url, store_url, "docker")
    job = run_to_end(catalog, settings, JobRequest(install_test_gear(), {"infile": sample_file}))
    assert job.state == JobState.COMPLETE
    names = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert f"gb-job-{job.id}-1" not in names
