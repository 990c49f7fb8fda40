"""Golden argv tests for every runtime, the registry, and the apptainer missing-binary error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from broker.runtimes.apptainer import ApptainerRuntime, SingularityRuntime, image_uri
from broker.runtimes.base import RuntimeUnavailableError
from broker.runtimes.bwrap import DEFAULT_PATH, HOST_PATHS, BwrapRuntime
from broker.runtimes.docker import DockerRuntime
from broker.runtimes.podman import PodmanRuntime
from broker.runtimes.registry import RUNTIMES, detect_runtime, make_runtime
from broker.task import ContainerSpec, Mount, Resources
from broker.transport import LocalTransport
from catalog.errors import ConfigError, InvalidInputError

TRICKY_ENV = {
    "SPACES": "a b  c",
    "QUOTES": 'it\'s "quoted"',
    "SUBST": "$(touch /tmp/pwned)",
    "TICKS": "`id`",
}


def make_spec(tmp: Path, **changes: object) -> ContainerSpec:
    """A spec with two read-only and one read-write mount under ``tmp`` (created)."""
    for sub in ("input", "config", "output"):
        (tmp / sub).mkdir(exist_ok=True)
    fields: dict[str, object] = {
        "name": "gb-job-7-1",
        "image": "localhost/gearbroker/busybox:1",
        "argv": ["/bin/sh", "-c", "run.sh $HOME"],
        "mounts": [
            Mount(str(tmp / "input"), "/flywheel/v0/input"),
            Mount(str(tmp / "config"), "/flywheel/v0/config.d"),
            Mount(str(tmp / "output"), "/flywheel/v0/output", read_only=False),
        ],
        "env": dict(TRICKY_ENV),
        "user": "1234:1234",
        "resources": Resources(cpus=2, memory_mb=512, gpus=1),
    }
    fields.update(changes)
    return ContainerSpec(**fields)  # type: ignore[arg-type]


def env_args(flag: str) -> list[str]:
    out: list[str] = []
    for key, value in TRICKY_ENV.items():
        out += [flag, f"{key}={value}"]
    return out


def mount_args(tmp: Path) -> list[str]:
    return [
        "--mount",
        f"type=bind,source={tmp}/input,target=/flywheel/v0/input,readonly",
        "--mount",
        f"type=bind,source={tmp}/config,target=/flywheel/v0/config.d,readonly",
        "--mount",
        f"type=bind,source={tmp}/output,target=/flywheel/v0/output",
    ]


def test_podman_argv_golden(tmp_path: Path) -> None:
    runtime = PodmanRuntime(
        binary="/usr/bin/podman",
        extra_args=["--runtime", "runc"],
        env={"CONTAINERS_CONF": "/etc/gb/containers.conf"},
    )
    assert runtime.argv(make_spec(tmp_path)) == [
        "env",
        "CONTAINERS_CONF=/etc/gb/containers.conf",
        "/usr/bin/podman",
        "run",
        "--runtime",
        "runc",
        "--name",
        "gb-job-7-1",
        "--network=none",
        "--workdir",
        "/flywheel/v0",
        *mount_args(tmp_path),
        *env_args("--env"),
        "--user",
        "1234:1234",
        "--cpus",
        "2",
        "--memory",
        "512m",
        "--memory-swap",
        "512m",
        "--pids-limit",
        "4096",
        "--device",
        "nvidia.com/gpu=all",
        "--entrypoint",
        '["/bin/sh"]',
        "localhost/gearbroker/busybox:1",
        "-c",
        "run.sh $HOME",
    ]


def test_docker_argv_golden(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path, network=True, user=None, resources=Resources(cpus=0.5, memory_mb=None, gpus=2)
    )
    # no memory limit: nothing to inspect for an OOM kill, so the engine removes it (--rm)
    assert DockerRuntime(pids_limit=None).argv(spec) == [
        "docker",
        "run",
        "--rm",
        "--name",
        "gb-job-7-1",
        "--workdir",
        "/flywheel/v0",
        *mount_args(tmp_path),
        *env_args("--env"),
        "--cpus",
        "0.5",
        "--gpus",
        "2",
        "--entrypoint",
        "/bin/sh",
        "localhost/gearbroker/busybox:1",
        "-c",
        "run.sh $HOME",
    ]


def test_oci_runtime_removes_only_containers_without_memory_limit() -> None:
    limited = ContainerSpec(name="a", image="x:1", argv=["true"], resources=Resources(memory_mb=64))
    free = ContainerSpec(name="b", image="x:1", argv=["true"])
    for runtime in (PodmanRuntime(), DockerRuntime()):
        assert runtime.removes_itself(free) and "--rm" in runtime.argv(free)
        assert not runtime.removes_itself(limited) and "--rm" not in runtime.argv(limited)


def test_oci_helper_commands() -> None:
    spec = ContainerSpec(name="gb-job-1-1", image="x:1", argv=["true"])
    podman = PodmanRuntime(env={"CONTAINERS_CONF": "/c"})
    assert podman.stop_argv(spec) == ["env", "CONTAINERS_CONF=/c", "podman", "stop", "-t", "10",
                                      "gb-job-1-1"]  # fmt: skip
    assert podman.remove_argv(spec) == ["env", "CONTAINERS_CONF=/c", "podman", "rm", "-f",
                                        "gb-job-1-1"]  # fmt: skip
    assert DockerRuntime(binary="/opt/docker").stop_argv(spec) == [
        "/opt/docker", "stop", "-t", "10", "gb-job-1-1"
    ]  # fmt: skip


@pytest.mark.parametrize("runtime", [PodmanRuntime(), DockerRuntime()], ids=["podman", "docker"])
@pytest.mark.parametrize("bad", ["/data/a,b", '/data/"x"', "/data/new\nline"])
def test_oci_rejects_paths_the_mount_syntax_cannot_express(
    runtime: PodmanRuntime, bad: str
) -> None:
    spec = ContainerSpec(name="n1", image="x:1", argv=["true"], mounts=[Mount(bad, "/in")])
    with pytest.raises(InvalidInputError, match="cannot express"):
        runtime.argv(spec)


def test_oci_accepts_colons_in_paths() -> None:
    spec = ContainerSpec(
        name="n1", image="x:1", argv=["true"], mounts=[Mount("/data/2024:01", "/flywheel/v0/in")]
    )
    assert "type=bind,source=/data/2024:01,target=/flywheel/v0/in,readonly" in (
        PodmanRuntime().argv(spec)
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("user", "root"), ("user", "1234"), ("image", "--privileged"), ("argv", [""])],
)
def test_invalid_spec_fields_are_rejected(field: str, value: object) -> None:
    fields: dict[str, object] = {"name": "n1", "image": "x:1", "argv": ["true"], field: value}
    spec = ContainerSpec(**fields)  # type: ignore[arg-type]
    for runtime in (PodmanRuntime(), BwrapRuntime()):
        with pytest.raises(InvalidInputError):
            runtime.argv(spec)


def test_relative_mount_source_is_rejected() -> None:
    spec = ContainerSpec(name="n1", image="x:1", argv=["true"], mounts=[Mount("rel", "/in")])
    with pytest.raises(InvalidInputError, match="absolute"):
        DockerRuntime().argv(spec)


def test_cli_env_names_are_validated() -> None:
    with pytest.raises(InvalidInputError):
        PodmanRuntime(env={"A B": "1"})


def test_apptainer_argv_golden(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, image="docker://localhost/gearbroker/busybox:1")
    assert ApptainerRuntime().argv(spec) == [
        "env",
        'APPTAINERENV_QUOTES=it\'s "quoted"',
        "apptainer",
        "exec",
        "--containall",
        "--cleanenv",
        "--pwd",
        "/flywheel/v0",
        "--net",
        "--network",
        "none",
        "--nv",
        "--bind",
        f"{tmp_path}/input:/flywheel/v0/input:ro",
        "--bind",
        f"{tmp_path}/config:/flywheel/v0/config.d:ro",
        "--bind",
        f"{tmp_path}/output:/flywheel/v0/output:rw",
        "--env",
        "SPACES=a b  c",
        "--env",
        "SUBST=$(touch /tmp/pwned)",
        "--env",
        "TICKS=`id`",
        "docker://localhost/gearbroker/busybox:1",
        "/bin/sh",
        "-c",
        "run.sh $HOME",
    ]


def test_apptainer_env_the_flag_parser_would_mangle_goes_through_the_environment(
    tmp_path: Path,
) -> None:
    env = {"PLAIN": "a b", "COMMA": "x,y=z", "TRAIL": 'ends"', "NL": "two\nlines"}
    spec = make_spec(tmp_path, image="/images/gear.sif", env=env, mounts=[], network=True,
                     resources=Resources())  # fmt: skip
    runtime = SingularityRuntime(binary="/opt/bin/singularity", env={"SINGULARITY_CACHEDIR": "/c"},
                                 extra_args=["--writable-tmpfs"])  # fmt: skip
    assert runtime.argv(spec) == [
        "env",
        "SINGULARITYENV_COMMA=x,y=z",
        "SINGULARITYENV_NL=two\nlines",
        'SINGULARITYENV_TRAIL=ends"',
        "SINGULARITY_CACHEDIR=/c",
        "/opt/bin/singularity",
        "exec",
        "--writable-tmpfs",
        "--containall",
        "--cleanenv",
        "--pwd",
        "/flywheel/v0",
        "--env",
        "PLAIN=a b",
        "/images/gear.sif",
        "/bin/sh",
        "-c",
        "run.sh $HOME",
    ]


def test_apptainer_limits_and_remote_paths() -> None:
    spec = ContainerSpec(
        name="n1",
        image="gear.sif",
        argv=["run"],
        mounts=[Mount("/cluster/only/here", "/flywheel/v0/input")],
        resources=Resources(cpus=1.5, memory_mb=100),
    )
    runtime = ApptainerRuntime(local_paths=False, apply_limits=True, isolate_network=False)
    assert runtime.argv(spec)[6:] == [
        "--bind", "/cluster/only/here:/flywheel/v0/input:ro",
        "--cpus", "1.5", "--memory", "104857600", "--memory-swap", "104857600",
        "--pids-limit", "4096", "gear.sif", "run",
    ]  # fmt: skip


def test_apptainer_missing_bind_source_raises_instead_of_exiting(tmp_path: Path) -> None:
    spec = ContainerSpec(
        name="n1", image="g.sif", argv=["run"], mounts=[Mount(str(tmp_path / "gone"), "/in")]
    )
    with pytest.raises(InvalidInputError, match="does not exist"):
        ApptainerRuntime().argv(spec)


@pytest.mark.parametrize("bad", ["/data/a:b", "/data/a,b"])
def test_apptainer_rejects_bind_separators(bad: str) -> None:
    spec = ContainerSpec(name="n1", image="g.sif", argv=["run"], mounts=[Mount(bad, "/in")])
    with pytest.raises(InvalidInputError, match="cannot express"):
        ApptainerRuntime(local_paths=False).argv(spec)


@pytest.mark.parametrize(
    ("image", "uri"),
    [
        ("docker://ubuntu:22.04", "docker://ubuntu:22.04"),
        ("localhost/gearbroker/busybox:1", "docker://localhost/gearbroker/busybox:1"),
        ("/images/gear.sif", "/images/gear.sif"),
        ("gear.sif", "gear.sif"),
        ("oras://registry/gear:1", "oras://registry/gear:1"),
        ("docker-archive:/tmp/x.tar", "docker-archive:/tmp/x.tar"),
    ],
)
def test_apptainer_image_uri(image: str, uri: str) -> None:
    assert image_uri(image) == uri


def test_apptainer_missing_binary_is_a_clear_error() -> None:
    runtime = ApptainerRuntime(binary="apptainer-not-installed-here")
    transport = LocalTransport()
    assert runtime.version(transport) is None
    assert not runtime.available(transport)
    with pytest.raises(RuntimeUnavailableError, match=r"apptainer-not-installed-here not found on "
                       r".+; install it or choose another runtime with --runtime"):  # fmt: skip
        runtime.ensure_available(transport)


def test_apptainer_digest_of_a_sif_file(tmp_path: Path) -> None:
    sif = tmp_path / "gear.sif"
    sif.write_bytes(b"not really a sif")
    digest = ApptainerRuntime().image_digest(str(sif), LocalTransport())
    assert digest == "sha256:" + hashlib.sha256(b"not really a sif").hexdigest()
    assert ApptainerRuntime().image_digest("docker://x:1", LocalTransport()) is None


def test_bwrap_argv_golden_rootfs(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, image="rootfs:/srv/rootfs/busybox", resources=Resources())
    assert BwrapRuntime().argv(spec) == [
        "setpriv", "--reuid=1234", "--regid=1234", "--clear-groups", "--",
        "bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--ro-bind", "/srv/rootfs/busybox", "/",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--ro-bind", f"{tmp_path}/input", "/flywheel/v0/input",
        "--ro-bind", f"{tmp_path}/config", "/flywheel/v0/config.d",
        "--bind", f"{tmp_path}/output", "/flywheel/v0/output",
        "--chdir", "/flywheel/v0", "--clearenv",
        "--setenv", "PATH", DEFAULT_PATH,
        "--setenv", "SPACES", "a b  c",
        "--setenv", "QUOTES", "it's \"quoted\"",
        "--setenv", "SUBST", "$(touch /tmp/pwned)",
        "--setenv", "TICKS", "`id`",
        "--uid", "1234", "--gid", "1234",
        "--", "/bin/sh", "-c", "run.sh $HOME",
    ]  # fmt: skip


def test_bwrap_argv_host_mapped_network_gpu(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, network=True, mounts=[], env={"PATH": "/opt/bin"}, user=None)
    runtime = BwrapRuntime(
        binary="/usr/bin/bwrap",
        images={"localhost/gearbroker/busybox:1": "/srv/busybox"},
        gpu_devices=["/dev/nvidia0"],
    )
    assert runtime.argv(spec) == [
        "/usr/bin/bwrap", "--unshare-all", "--share-net", "--die-with-parent", "--new-session",
        "--cap-drop", "ALL", "--ro-bind", "/srv/busybox", "/",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--dev-bind-try", "/dev/nvidia0", "/dev/nvidia0",
        "--chdir", "/flywheel/v0", "--clearenv", "--setenv", "PATH", "/opt/bin",
        "--", "/bin/sh", "-c", "run.sh $HOME",
    ]  # fmt: skip
    host = runtime.argv(make_spec(tmp_path, image="host", mounts=[], user=None))
    end = 6 + 3 * len(HOST_PATHS)
    assert host[6:end] == [item for path in HOST_PATHS for item in ("--ro-bind-try", path, path)]
    assert host[end : end + 3] == ["--dir", "/flywheel/v0", "--proc"]


def test_bwrap_unresolvable_image(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot resolve image"):
        BwrapRuntime().argv(make_spec(tmp_path, image="docker.io/x/y:1"))
    with pytest.raises(InvalidInputError, match="absolute"):
        BwrapRuntime().argv(make_spec(tmp_path, image="rootfs:relative/dir"))


def test_registry() -> None:
    assert set(RUNTIMES) == {"podman", "docker", "apptainer", "singularity", "bwrap"}
    runtime = make_runtime("docker", binary="/usr/bin/docker", extra_args=["--init"])
    assert isinstance(runtime, DockerRuntime)
    assert runtime.binary == "/usr/bin/docker"
    assert make_runtime("singularity").binary == "singularity"
    with pytest.raises(InvalidInputError, match="apptainer, bwrap, docker, podman, singularity"):
        make_runtime("lxc")
    with pytest.raises(ConfigError, match="invalid options"):
        make_runtime("podman", colour="blue")


def test_detect_runtime_skips_missing_binaries() -> None:
    transport = LocalTransport()
    options = {"apptainer": {"binary": "apptainer-not-installed-here"}}
    with pytest.raises(RuntimeUnavailableError, match="tried apptainer"):
        detect_runtime(transport, prefer=("apptainer",), options=options)
    found = detect_runtime(
        transport,
        prefer=("apptainer", "bwrap"),
        options={**options, "bwrap": {"binary": "/bin/echo"}},
    )
    assert isinstance(found, BwrapRuntime)
