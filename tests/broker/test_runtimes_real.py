"""Real container runs through LocalTransport: podman, docker and bubblewrap.

Each test builds a job folder (input read-only, output read-write), runs the runtime's argv
and checks what a gear would observe.  The output folder is made world-writable because a
container running as another uid must be able to write it (the broker's staging does the
same, see broker/runtimes/bwrap.py and oci.py).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.commands import CommandResult
from broker.runtimes.base import ContainerRuntime
from broker.runtimes.bwrap import BwrapRuntime
from broker.runtimes.docker import DockerRuntime
from broker.runtimes.oci import OciRuntime
from broker.runtimes.podman import PodmanRuntime
from broker.task import GEAR_ROOT, ContainerSpec, Mount, Resources
from broker.transport import LocalTransport
from tests.fixtures.engines import ContainerEngine

TRANSPORT = LocalTransport()
OCI_NAMES = [
    pytest.param("podman", marks=pytest.mark.podman),
    pytest.param("docker", marks=pytest.mark.docker),
]
ENGINES = [
    pytest.param("podman", marks=pytest.mark.podman),
    pytest.param("docker", marks=pytest.mark.docker),
    "bwrap",
]


@dataclass
class Engine:
    runtime: ContainerRuntime
    image: str


def podman_conf(engine: ContainerEngine) -> str:
    return engine.env["CONTAINERS_CONF"]


def _oci(engine: ContainerEngine, cls: type[OciRuntime], **options: object) -> Engine:
    env = {k: v for k, v in engine.env.items() if k in {"CONTAINERS_CONF", "DOCKER_HOST"}}
    runtime = cls(binary=engine.binary, env=env, **options)  # type: ignore[arg-type]
    return Engine(runtime, engine.busybox_image)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    if request.param == "bwrap":
        root = request.getfixturevalue("bwrap_rootfs")
        return Engine(BwrapRuntime(), f"rootfs:{root}")
    cls = PodmanRuntime if request.param == "podman" else DockerRuntime
    return _oci(request.getfixturevalue(f"{request.param}_engine"), cls)


@pytest.fixture
def job_dir() -> Iterator[Path]:
    """A job folder traversable by any uid (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="gb-rt-"))
    root.chmod(0o755)
    for sub in ("input", "output"):
        (root / sub).mkdir()
    (root / "input" / "data.txt").write_text("payload\n")
    (root / "output").chmod(0o777)
    yield root
    shutil.rmtree(root)


def spec_for(engine: Engine, job: Path, argv: list[str], **changes: object) -> ContainerSpec:
    fields: dict[str, object] = {
        "name": f"gbtest-{uuid.uuid4().hex[:10]}",
        "image": engine.image,
        "argv": argv,
        "mounts": [
            Mount(str(job / "input"), f"{GEAR_ROOT}/input"),
            Mount(str(job / "output"), f"{GEAR_ROOT}/output", read_only=False),
        ],
    }
    fields.update(changes)
    return ContainerSpec(**fields)  # type: ignore[arg-type]


def run(engine: Engine, spec: ContainerSpec, timeout: float = 60) -> CommandResult:
    """Run the container to completion and remove it."""
    try:
        return TRANSPORT.run(engine.runtime.argv(spec), timeout=timeout, check=False)
    finally:
        remove(engine, spec)


def remove(engine: Engine, spec: ContainerSpec) -> None:
    argv = engine.runtime.remove_argv(spec)
    if argv is not None:
        TRANSPORT.run(argv, check=False)


def test_output_written_input_read_only_and_exit_code(engine: Engine, job_dir: Path) -> None:
    script = (
        "cat input/data.txt > output/copy.txt || exit 10; "
        "echo no > input/new.txt && exit 11; exit 3"
    )
    done = run(engine, spec_for(engine, job_dir, ["/bin/sh", "-c", script]))
    assert done.returncode == 3, done.stderr
    assert (job_dir / "output" / "copy.txt").read_text() == "payload\n"
    assert not (job_dir / "input" / "new.txt").exists()
    assert "Read-only file system" in done.stderr


def interfaces(proc_net_dev: str) -> set[str]:
    return {line.split(":")[0].strip() for line in proc_net_dev.splitlines()[2:]}


def test_network_none_leaves_only_loopback(engine: Engine, job_dir: Path) -> None:
    done = run(engine, spec_for(engine, job_dir, ["cat", "/proc/net/dev"]))
    assert done.returncode == 0, done.stderr
    assert interfaces(done.stdout) == {"lo"}


def test_bwrap_share_net_sees_the_host_interfaces(bwrap_rootfs: Path, job_dir: Path) -> None:
    engine = Engine(BwrapRuntime(), f"rootfs:{bwrap_rootfs}")
    done = run(engine, spec_for(engine, job_dir, ["cat", "/proc/net/dev"], network=True))
    assert done.returncode == 0, done.stderr
    assert interfaces(done.stdout) == interfaces(Path("/proc/net/dev").read_text())


def test_env_values_arrive_byte_exact(engine: Engine, job_dir: Path) -> None:
    env = {
        "SPACES": "a b  c ",
        "QUOTES": 'it\'s "quoted" \\ end',
        "SUBST": "$(touch /tmp/pwned) ${HOME}",
        "TICKS": "`id`",
        "COMMA": "x,y=z",
        "NEWLINE": "one\ntwo",
        "UNICODE": "Zürich \u2013 東京",
    }
    done = run(engine, spec_for(engine, job_dir, ["cat", "/proc/self/environ"], env=env))
    assert done.returncode == 0, done.stderr
    seen = dict(item.split("=", 1) for item in done.stdout.split("\x00") if item)
    assert {key: seen.get(key) for key in env} == env


def test_user_mapping_owns_output_files(engine: Engine, job_dir: Path) -> None:
    spec = spec_for(engine, job_dir, ["/bin/sh", "-c", "id -u > output/who"], user="1234:1234")
    done = run(engine, spec)
    assert done.returncode == 0, done.stderr
    made = job_dir / "output" / "who"
    assert made.read_text().strip() == "1234"
    assert (made.stat().st_uid, made.stat().st_gid) == (1234, 1234)


@pytest.mark.parametrize("name", OCI_NAMES)
def test_stop_argv_stops_a_sleeping_container(
    request: pytest.FixtureRequest, job_dir: Path, name: str
) -> None:
    cls = PodmanRuntime if name == "podman" else DockerRuntime
    engine = _oci(request.getfixturevalue(f"{name}_engine"), cls, stop_timeout_s=2)
    assert isinstance(engine.runtime, OciRuntime)
    spec = spec_for(engine, job_dir, ["sleep", "600"])
    running = engine.runtime.cli("inspect", "--format", "{{.State.Running}}", spec.name)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(TRANSPORT.run, engine.runtime.argv(spec), timeout=120, check=False)
        try:
            deadline = time.monotonic() + 30
            while TRANSPORT.run(running, check=False).stdout.strip() != "true":
                assert time.monotonic() < deadline, "container never started"
                time.sleep(0.1)
            started = time.monotonic()
            stop = engine.runtime.stop_argv(spec)
            TRANSPORT.run(stop)
            done = future.result(timeout=30)
            elapsed = time.monotonic() - started
        finally:
            remove(engine, spec)
    assert done.returncode in {137, 143}
    assert elapsed < 8


@pytest.mark.parametrize("name", OCI_NAMES)
def test_memory_limit_kills_and_oom_is_reported(
    request: pytest.FixtureRequest, job_dir: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """busybox ``tail`` buffers its newline-free input: ~200 MB against a 32 MB limit.

    Docker reports OOMKilled.  Podman < 5 never sets it (containers/podman#13102: conmon 2.1
    drops its ``oom`` marker in the podman process's working directory, podman 4 looks in
    the container's bundle), so the runtime also reads that marker from the CLI's ``cwd``.
    """
    monkeypatch.chdir(job_dir)  # conmon's stray `oom` file lands here, not in the checkout
    cls = PodmanRuntime if name == "podman" else DockerRuntime
    engine = _oci(request.getfixturevalue(f"{name}_engine"), cls)
    spec = spec_for(
        engine,
        job_dir,
        ["/bin/sh", "-c", "head -c 200m /dev/zero | tail"],
        resources=Resources(memory_mb=32),
    )
    try:
        done = TRANSPORT.run(engine.runtime.argv(spec), timeout=120, check=False)
        oom = engine.runtime.oom_killed(spec, TRANSPORT, cwd=str(job_dir))
    finally:
        remove(engine, spec)
    assert done.returncode == 137
    assert oom is True


@pytest.mark.docker
def test_no_oom_without_memory_pressure(request: pytest.FixtureRequest, job_dir: Path) -> None:
    engine = _oci(request.getfixturevalue("docker_engine"), DockerRuntime)
    spec = spec_for(engine, job_dir, ["true"], resources=Resources(memory_mb=64))
    try:
        assert TRANSPORT.run(engine.runtime.argv(spec), check=False).returncode == 0
        assert engine.runtime.oom_killed(spec, TRANSPORT) is False
    finally:
        remove(engine, spec)


@pytest.mark.parametrize("name", OCI_NAMES)
def test_image_digest_and_version(request: pytest.FixtureRequest, name: str) -> None:
    cls = PodmanRuntime if name == "podman" else DockerRuntime
    engine = _oci(request.getfixturevalue(f"{name}_engine"), cls)
    digest = engine.runtime.image_digest(engine.image, TRANSPORT)
    assert digest is not None
    assert digest.startswith("sha256:")
    assert len(digest) == 71
    assert engine.runtime.image_digest("localhost/gearbroker/absent:0", TRANSPORT) is None
    assert engine.runtime.available(TRANSPORT)
    assert cls(binary="/nonexistent/cli").version(TRANSPORT) is None


def test_bwrap_version_and_host_mode(job_dir: Path) -> None:
    if shutil.which("bwrap") is None:
        pytest.skip("bwrap not installed: run scripts/images/build-test-images.sh rootfs")
    runtime = BwrapRuntime()
    version = runtime.version(TRANSPORT)
    assert version is not None
    assert version[0].isdigit()
    engine = Engine(runtime, "host")
    script = "cat input/data.txt > output/host.txt && python3 -c 'print(6 * 7)'"
    done = run(engine, spec_for(engine, job_dir, ["sh", "-c", script]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"
    assert (job_dir / "output" / "host.txt").read_text() == "payload\n"


@pytest.mark.podman
def test_bwrap_runs_an_image_unpacked_from_podman(
    podman_engine: ContainerEngine, job_dir: Path, tmp_path: Path
) -> None:
    if shutil.which("bwrap") is None:
        pytest.skip("bwrap not installed: run scripts/images/build-test-images.sh rootfs")
    cache = tmp_path / "rootfs-cache"
    options = {
        "binary": podman_engine.binary,
        "env": {"CONTAINERS_CONF": podman_conf(podman_engine)},
    }
    runtime = BwrapRuntime(cache_dir=str(cache), podman_options=options)
    engine = Engine(runtime, podman_engine.busybox_image)
    done = run(engine, spec_for(engine, job_dir, ["/bin/sh", "-c", "echo ok > output/unpacked"]))
    assert done.returncode == 0, done.stderr
    assert (job_dir / "output" / "unpacked").read_text() == "ok\n"
    (folder,) = cache.iterdir()  # one rootfs, named by image ID; no temporary leftovers
    assert runtime.rootfs(podman_engine.busybox_image) == str(folder)
    assert [p.name for p in cache.iterdir()] == [folder.name]
