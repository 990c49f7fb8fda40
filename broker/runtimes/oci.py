"""What podman and docker share: one ``run`` command line, stop/remove/inspect helpers.

A container with a memory limit is created without ``--rm``: after it exits the broker asks
:meth:`OciRuntime.oom_killed`, then removes it with :meth:`OciRuntime.remove_argv`.  One
without a limit cannot be killed for exceeding it, so nothing needs inspecting: it runs with
``--rm`` and the engine removes it on exit (:meth:`OciRuntime.removes_itself`), which costs
less than a second CLI call.  ``remove_argv`` still serves after a stop or kill.

Argv contract of :meth:`OciRuntime.argv`::

    [env K=V ...] <binary> run [--rm] <extra_args...> --name <name> [--network=none]
        --workdir <dir>
        --mount type=bind,source=<src>,target=<dst>[,readonly] ...   (one per mount)
        --env K=V ...                                               (one element per variable)
        [--user uid:gid] --cpus <n> [--memory <N>m --memory-swap <N>m] [--pids-limit <n>]
        [GPU flags] --entrypoint <argv[0]> <image> <argv[1:]...>

Mounts use ``--mount`` rather than ``-v``: a ``:`` in a path is then harmless, and a path
containing ``,`` or ``"`` (the ``--mount`` field syntax) is rejected with InvalidInputError.
``--mount`` also refuses a missing source instead of silently creating an empty folder.
``--memory-swap`` equals ``--memory`` so exceeding the limit is an OOM kill, not swapping.
``--entrypoint`` carries the gear command so an image ENTRYPOINT never swallows it.
Not enforced: ``Resources.disk_mb`` (it needs storage-driver quotas) and walltime (the
backend's supervisor enforces it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import ClassVar

from broker.commands import CommandError
from broker.runtimes.base import ContainerRuntime, RuntimeUnavailableError, host_label
from broker.runtimes.common import check_spec, cli_prefix, flag_pairs, format_cpus, parse_user
from broker.task import ContainerSpec, Mount, Resources
from broker.transport import Transport

#: Characters the ``--mount`` field syntax reserves; paths containing them are rejected.
MOUNT_FORBIDDEN = ',"'


class OciRuntime(ContainerRuntime):
    """Argv builder for a docker-compatible CLI.

    ``binary``: the CLI (default: the class's ``default_binary``, found on PATH);
    ``extra_args``: site flags inserted right after ``run`` (e.g. ``--runtime runc``);
    ``env``: environment for the CLI process (e.g. ``CONTAINERS_CONF``, ``DOCKER_HOST``),
    carried as an ``env K=V`` prefix of every command; ``pids_limit``: ``--pids-limit``
    (None: the engine's default); ``stop_timeout_s``: grace period of :meth:`stop_argv`.
    """

    default_binary: ClassVar[str]
    #: Go template printing the version (server side where a daemon must answer).
    version_format: ClassVar[str]

    def __init__(
        self,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        pids_limit: int | None = 4096,
        stop_timeout_s: int = 10,
    ) -> None:
        self.binary = binary or self.default_binary
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.pids_limit = pids_limit
        self.stop_timeout_s = stop_timeout_s
        cli_prefix(self.binary, self.env)  # validate once, early

    def cli(self, *args: str) -> list[str]:
        """``<binary> args...`` with the CLI's environment prefix."""
        return [*cli_prefix(self.binary, self.env), *args]

    def argv(self, spec: ContainerSpec) -> list[str]:
        check_spec(spec, MOUNT_FORBIDDEN)
        out = self.cli("run")
        if self.removes_itself(spec):
            out.append("--rm")
        out += [*self.extra_args, "--name", spec.name]
        if not spec.network:
            out.append("--network=none")
        out += ["--workdir", spec.workdir]
        out += flag_pairs("--mount", (self.mount_option(m) for m in spec.mounts))
        out += flag_pairs("--env", (f"{key}={value}" for key, value in spec.env.items()))
        if spec.user is not None:
            uid, gid = parse_user(spec.user)
            out += ["--user", f"{uid}:{gid}"]
        out += self.resource_args(spec.resources)
        out += ["--entrypoint", self.entrypoint(spec.argv[0]), spec.image, *spec.argv[1:]]
        return out

    @staticmethod
    def mount_option(mount: Mount) -> str:
        """The ``--mount`` value of one bind mount."""
        value = f"type=bind,source={mount.source},target={mount.target}"
        return value + ",readonly" if mount.read_only else value

    def resource_args(self, res: Resources) -> list[str]:
        """CPU, memory, process-count and GPU flags for ``res``."""
        out: list[str] = []
        if res.cpus > 0:
            out += ["--cpus", format_cpus(res.cpus)]
        if res.memory_mb is not None:
            out += ["--memory", f"{res.memory_mb}m", "--memory-swap", f"{res.memory_mb}m"]
        if self.pids_limit is not None:
            out += ["--pids-limit", str(self.pids_limit)]
        if res.gpus > 0:
            out += self.gpu_args(res.gpus)
        return out

    def gpu_args(self, gpus: int) -> list[str]:
        """Flags exposing ``gpus`` GPUs (docker style; podman overrides)."""
        return ["--gpus", str(gpus)]

    def entrypoint(self, command: str) -> str:
        """The ``--entrypoint`` value running ``command`` (plain string for docker)."""
        return command

    def stop_argv(self, spec: ContainerSpec) -> list[str]:
        return self.cli("stop", "-t", str(self.stop_timeout_s), spec.name)

    def removes_itself(self, spec: ContainerSpec) -> bool:
        return spec.resources.memory_mb is None

    def remove_argv(self, spec: ContainerSpec) -> list[str]:
        return self.cli("rm", "-f", spec.name)

    def oom_killed(self, spec: ContainerSpec, transport: Transport, cwd: str | None = None) -> bool:
        """``.State.OOMKilled`` of the exited container; CommandError if it cannot be inspected.
        False for a container without a memory limit (it has no limit to exceed, and is gone)."""
        if self.removes_itself(spec):
            return False
        fmt = "{{.State.OOMKilled}}"
        done = transport.run(self.cli("inspect", "--type", "container", "--format", fmt, spec.name))
        return done.stdout.strip() == "true"

    def version(self, transport: Transport) -> str | None:
        try:
            done = transport.run(self.cli("version", "--format", self.version_format), timeout=30)
        except CommandError:
            return None
        return done.stdout.strip() or None

    def ensure_available(self, transport: Transport) -> str:
        found = self.version(transport)
        if found is None:
            raise RuntimeUnavailableError(
                f"{self.binary} not found on {host_label(transport)} (or its engine does not "
                "answer); install/start it or choose another runtime with --runtime"
            )
        return found

    def image_digest(self, image: str, transport: Transport) -> str | None:
        """``sha256:<hex>`` of the image's first repository digest (the registry manifest
        digest) when it has one, else its image ID (``sha256:<hex>`` of the image config);
        None when the image is not present locally."""
        fmt = "{{json .RepoDigests}} {{.Id}}"
        done = transport.run(self.cli("image", "inspect", "--format", fmt, image), check=False)
        if done.returncode != 0 or not done.stdout.strip():
            return None
        digests_json, _, image_id = done.stdout.strip().rpartition(" ")
        digests = json.loads(digests_json) or []
        if digests:
            return str(digests[0]).rpartition("@")[2]
        return image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"
