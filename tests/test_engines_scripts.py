"""The service/image scripts parse, and the engines, bwrap, Slurm and sshd they set up work."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from tests.fixtures.engines import REPO_ROOT, ContainerEngine, SlurmCluster, SshLogin

SCRIPTS = [
    REPO_ROOT / "scripts" / "services" / name
    for name in ("podman.sh", "docker.sh", "slurm.sh", "sshd.sh", "lib_extra.sh")
] + [REPO_ROOT / "scripts" / "images" / "build-test-images.sh"]
SBATCH = ("sbatch", "--parsable")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True, capture_output=True)


def _run_in(engine: ContainerEngine, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [engine.binary, "run", "--rm", "--network=none", *argv],
        env=dict(engine.env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.podman
def test_podman_busybox_prints_to_stdout(podman_engine: ContainerEngine) -> None:
    done = _run_in(podman_engine, podman_engine.busybox_image, "echo", "hello from podman")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from podman\n"


@pytest.mark.podman
def test_podman_bash_is_ash_and_output_mount_is_writable(
    podman_engine: ContainerEngine, tmp_path: Path
) -> None:
    script = "set -eu; echo $((6 * 7)) > /flywheel/v0/output/answer; [[ -d /flywheel/v0/work ]]"
    done = _run_in(
        podman_engine,
        "-v",
        f"{tmp_path}:/flywheel/v0/output",
        podman_engine.busybox_image,
        "bash",
        "-c",
        script,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "answer").read_text() == "42\n"


@pytest.mark.podman
def test_dcm2niix_image_prints_its_version(podman_engine: ContainerEngine) -> None:
    done = _run_in(podman_engine, podman_engine.dcm2niix_image, "dcm2niix", "--version")
    assert "dcm2niiX version v1.0" in done.stdout + done.stderr


def test_bwrap_rootfs_writes_through_bound_flywheel_dir(bwrap_rootfs: Path, tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "in.txt").write_text("payload\n")
    (tmp_path / "output").mkdir()
    argv = ["bwrap", "--ro-bind", str(bwrap_rootfs), "/", "--bind", str(tmp_path), "/flywheel/v0"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--unshare-all"]
    argv += ["--die-with-parent", "--chdir", "/flywheel/v0", "bash", "-c"]
    argv += ["cat input/in.txt > output/out.txt"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "output" / "out.txt").read_text() == "payload\n"


@pytest.mark.docker
def test_docker_busybox_prints_to_stdout(docker_engine: ContainerEngine) -> None:
    done = _run_in(docker_engine, docker_engine.busybox_image, "sh", "-c", "echo hi from docker")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hi from docker\n"


def _job_state(job_id: str) -> str | None:
    """The state squeue reports for job_id (22.05 ignores `-j` together with --json)."""
    out = subprocess.run(
        ["squeue", "--json", "-t", "all"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    for job in json.loads(out)["jobs"]:
        if str(job["job_id"]) == job_id:
            state = job["job_state"]
            return state if isinstance(state, str) else ",".join(state)
    return None


@pytest.mark.slurm
def test_sbatch_job_completes(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    job_id = subprocess.run(
        [*SBATCH, "-p", slurm_cluster.default_partition, "-o", str(out), "--wrap", "echo hi"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    deadline = time.monotonic() + 60
    state = _job_state(job_id)
    while state not in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}:
        assert time.monotonic() < deadline, f"job {job_id} still {state}"
        time.sleep(0.2)
        state = _job_state(job_id)
    assert state == "COMPLETED"
    assert out.read_text() == "hi\n"
    assert {"debug", "short"} <= set(slurm_cluster.partitions)


def test_ssh_login_runs_a_command(ssh_login: SshLogin) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(str(ssh_login.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        ssh_login.host,
        port=ssh_login.port,
        username=ssh_login.user,
        key_filename=str(ssh_login.key),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        _, stdout, _ = client.exec_command("echo ok")
        assert stdout.read() == b"ok\n"
    finally:
        client.close()
