"""Apptainer / Singularity, with the command line built by spython (never run by it).

Argv contract::

    [env K=V ...] <binary> exec <extra_args...> --containall --cleanenv --pwd <workdir>
        [--net --network none] [--nv] --bind <src>:<dst>:ro|rw ... --env K=V ...
        [--cpus n --memory bytes --memory-swap bytes --pids-limit n] <image> <argv...>

- ``image``: ``docker://...`` and other ``scheme:`` references, ``.sif`` files and absolute
  paths pass unchanged; a bare reference (``localhost/x:1``) gets ``docker://``.
- Binds are comma-separated ``src:dst:opts`` for apptainer, so a path containing ``:`` or
  ``,`` is rejected.  With ``local_paths`` (the default) every bind source must exist here:
  it is checked before spython sees it (spython calls ``sys.exit`` on a missing one).
- ``--env`` values go through apptainer's key=value list parser, which drops quotes and
  splits on commas; a value containing ``"``, ``,`` or a line break is therefore passed as
  ``APPTAINERENV_K=V`` (``SINGULARITYENV_`` for singularity) in the command's environment,
  which ``--cleanenv`` keeps and apptainer hands over verbatim.
- ``spec.user`` is not applied: apptainer always runs as the invoking user.
- Resource limits need cgroup delegation, which most clusters leave to Slurm; they are added
  only with ``apply_limits=True``.  ``stop_argv`` is None: the backend signals the process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import ClassVar

from spython.main.base.command import generate_bind_list, init_command

from broker.commands import CommandError
from broker.runtimes.base import ContainerRuntime
from broker.runtimes.common import check_spec, cli_prefix, flag_pairs, format_cpus
from broker.task import ContainerSpec, Mount
from broker.transport import Transport
from catalog.errors import InvalidInputError

#: Characters apptainer's ``--bind`` syntax reserves.
BIND_FORBIDDEN = ":,"
_IMAGE_FILE_SUFFIXES = (".sif", ".simg", ".img", ".sqsh")
_UNSAFE_ENV_CHARS = frozenset('",\n\r')


class ApptainerRuntime(ContainerRuntime):
    """Runs gears with ``apptainer exec`` (or ``singularity exec``, see the subclass).

    ``binary``: the CLI; ``extra_args``: site flags after ``exec``; ``env``: environment of
    the CLI (e.g. ``APPTAINER_CACHEDIR``); ``isolate_network``: add ``--net --network none``
    for specs without network (apptainer >= 1.1 allows it unprivileged); ``apply_limits``:
    pass cgroup limits; ``local_paths``: bind sources live on this machine (False when the
    command runs on another host, e.g. a cluster reached over SSH).
    """

    name: ClassVar[str] = "apptainer"
    default_binary: ClassVar[str] = "apptainer"
    env_passthrough_prefix: ClassVar[str] = "APPTAINERENV_"

    def __init__(
        self,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        isolate_network: bool = True,
        apply_limits: bool = False,
        local_paths: bool = True,
        pids_limit: int = 4096,
    ) -> None:
        self.binary = binary or self.default_binary
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.isolate_network = isolate_network
        self.apply_limits = apply_limits
        self.local_paths = local_paths
        self.pids_limit = pids_limit
        cli_prefix(self.binary, self.env)

    def argv(self, spec: ContainerSpec) -> list[str]:
        check_spec(spec, BIND_FORBIDDEN)
        safe = {k: v for k, v in spec.env.items() if not _UNSAFE_ENV_CHARS & set(v)}
        passed = {self.env_passthrough_prefix + k: v for k, v in spec.env.items() if k not in safe}
        # spython's builder: ["singularity", "exec"]; the binary and prefix are ours.
        builder = SimpleNamespace(quiet=False, debug=False)
        command: list[str] = list(init_command(builder, "exec"))
        out = [*cli_prefix(self.binary, {**self.env, **passed}), *command[1:]]
        out += [*self.extra_args, "--containall", "--cleanenv", "--pwd", spec.workdir]
        if self.isolate_network and not spec.network:
            out += ["--net", "--network", "none"]
        if spec.resources.gpus > 0:
            out.append("--nv")
        out += self.bind_args(spec.mounts)
        out += flag_pairs("--env", (f"{k}={v}" for k, v in safe.items()))
        if self.apply_limits:
            out += self.limit_args(spec)
        return [*out, image_uri(spec.image), *spec.argv]

    def bind_args(self, mounts: Sequence[Mount]) -> list[str]:
        """``--bind src:dst:ro|rw`` per mount, through spython when the paths are local."""
        binds = [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in mounts]
        if not self.local_paths:
            return flag_pairs("--bind", binds)
        missing = [m.source for m in mounts if not os.path.exists(m.source)]
        if missing:
            raise InvalidInputError(f"bind source does not exist: {', '.join(missing)}")
        try:
            return list(generate_bind_list(None, binds))
        except SystemExit as exc:  # spython exits on a path that vanished meanwhile
            raise InvalidInputError(f"bind source does not exist: {binds}") from exc

    def limit_args(self, spec: ContainerSpec) -> list[str]:
        """cgroup limits (``apply_limits``): CPUs, memory without swap, process count."""
        res = spec.resources
        out = ["--cpus", format_cpus(res.cpus)] if res.cpus > 0 else []
        if res.memory_mb is not None:
            size = str(res.memory_mb * 1024 * 1024)
            out += ["--memory", size, "--memory-swap", size]
        return [*out, "--pids-limit", str(self.pids_limit)]

    def version(self, transport: Transport) -> str | None:
        try:
            done = transport.run([*cli_prefix(self.binary, self.env), "--version"], timeout=30)
        except CommandError:
            return None
        return done.stdout.strip() or None

    def image_digest(self, image: str, transport: Transport) -> str | None:
        """``sha256:<hex>`` of a local image file (the SIF itself); None for references that
        apptainer resolves at run time (``docker://`` and other schemes)."""
        uri = image_uri(image)
        if "://" in uri or (not uri.startswith("/") and not uri.endswith(_IMAGE_FILE_SUFFIXES)):
            return None
        done = transport.run(["sha256sum", "--", uri], check=False, timeout=600)
        if done.returncode != 0 or not done.stdout:
            return None
        return "sha256:" + done.stdout.split()[0]


class SingularityRuntime(ApptainerRuntime):
    """The same command line for the ``singularity`` binary (SingularityCE / older sites)."""

    name = "singularity"
    default_binary = "singularity"
    env_passthrough_prefix = "SINGULARITYENV_"


def image_uri(image: str) -> str:
    """The image argument apptainer understands: schemes, files and paths unchanged,
    anything else treated as a registry reference (``docker://`` prepended)."""
    scheme = image.split(":", 1)[0]
    if "://" in image or scheme in {"docker-archive", "docker-daemon", "oci", "oci-archive"}:
        return image
    if image.startswith(("/", "./", "../")) or image.endswith(_IMAGE_FILE_SUFFIXES):
        return image
    return f"docker://{image}"
