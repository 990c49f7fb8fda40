"""bubblewrap: run a gear from an unpacked root filesystem (or the host's own tools).

``spec.image`` is one of:

- ``rootfs:/abs/path``: an unpacked root filesystem, bound read-only at ``/``;
- ``host``: the host's programs: ``/usr``, ``/bin``, ``/sbin``, ``/lib*`` and a few files of
  ``/etc`` bound read-only (whatever of them exists) on a tmpfs root, plus the working
  directory (``--dir``);
- an OCI reference, looked up in the ``images`` mapping (image -> rootfs folder) or, when a
  ``cache_dir`` is configured, exported from podman on first use
  (:func:`broker.runtimes.unpack.unpack_image`).  The image's ENV/USER metadata is not used.

Argv contract::

    [setpriv --reuid U --regid G --clear-groups --] bwrap --unshare-all [--share-net]
        --die-with-parent --new-session --cap-drop ALL <root binds> --proc /proc --dev /dev
        --tmpfs /tmp [GPU devices] --ro-bind|--bind <src> <dst> ... --chdir <workdir>
        --clearenv --setenv PATH <default> --setenv K V ... [--uid U --gid G] -- <argv...>

With a rootfs, ``/`` is read-only: mount points (``/flywheel/v0/...``, ``/tmp``, ``/proc``,
``/dev``) must already exist in it, as they must in an OCI image.

Users: ``--uid/--gid`` only set the identity inside bwrap's user namespace; host files would
still belong to the caller.  So with ``switch_user`` (default) a spec user also prefixes
``setpriv`` to become that uid/gid on the host first (the broker must run as root for a uid
other than its own); the output folder must be writable by that uid.

Limits: bubblewrap has none.  CPU and memory limits are NOT enforced (a per-process
``RLIMIT_AS`` would break programs that reserve large address spaces and still not bound the
whole tree); walltime is enforced by the backend's supervisor, and under Slurm the job's
cgroup bounds memory and CPUs.  :meth:`oom_killed` is therefore always False.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from broker.commands import CommandError
from broker.runtimes.base import ContainerRuntime
from broker.runtimes.common import check_spec, parse_user
from broker.runtimes.podman import PodmanRuntime
from broker.runtimes.unpack import unpack_image
from broker.task import ContainerSpec, Mount
from broker.transport import LocalTransport, Transport
from catalog.errors import InvalidInputError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Host folders and files bound read-only for ``image = "host"`` (missing ones are skipped).
HOST_PATHS = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/resolv.conf",
    "/etc/hosts",
)
#: Device nodes bound (when present) for a spec asking for GPUs.
NVIDIA_DEVICES = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
    *(f"/dev/nvidia{i}" for i in range(8)),
)


class BwrapRuntime(ContainerRuntime):
    """Builds bubblewrap command lines.

    ``binary``: bwrap; ``images``: OCI reference -> rootfs folder; ``cache_dir``: unpack
    unmapped references from podman (built from ``podman_options``) into this folder, on the
    host ``transport`` reaches (default: this one); ``switch_user``: become ``spec.user`` on
    the host with setpriv (see the module doc); ``gpu_devices``: bound when GPUs are asked.
    Every option but ``transport`` is JSON-friendly, so a backend can rebuild the runtime.
    """

    name = "bwrap"

    def __init__(
        self,
        binary: str = "bwrap",
        images: Mapping[str, str] | None = None,
        cache_dir: str | None = None,
        transport: Transport | None = None,
        podman_options: Mapping[str, Any] | None = None,
        switch_user: bool = True,
        gpu_devices: Sequence[str] = NVIDIA_DEVICES,
    ) -> None:
        self.binary = binary
        self.images = dict(images or {})
        self.cache_dir = cache_dir
        self.transport = transport or LocalTransport()
        self.podman = PodmanRuntime(**(podman_options or {}))
        self.switch_user = switch_user
        self.gpu_devices = list(gpu_devices)

    def argv(self, spec: ContainerSpec) -> list[str]:
        check_spec(spec)
        out: list[str] = []
        ids = parse_user(spec.user) if spec.user is not None else None
        if ids is not None and self.switch_user:
            uid, gid = ids
            out += ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
        out += [self.binary, "--unshare-all"]
        if spec.network:
            out.append("--share-net")
        out += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        out += self.root_args(spec.image)
        if spec.image == "host":  # a tmpfs root: create the working directory (mode 0755)
            out += ["--dir", spec.workdir]
        out += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108
        if spec.resources.gpus > 0:
            for device in self.gpu_devices:
                out += ["--dev-bind-try", device, device]
        rebuilt: list[str] = []
        if spec.image != "host":
            rebuilt = self.missing_mount_parents(self.rootfs(spec.image), spec.mounts)
            out += self.rebuild_args(self.rootfs(spec.image), rebuilt, spec.mounts)
        for mount in spec.mounts:
            out += ["--ro-bind" if mount.read_only else "--bind", mount.source, mount.target]
        for parent in rebuilt:  # read-only again, like the image it stands in for
            out += ["--remount-ro", parent]
        out += ["--chdir", spec.workdir, "--clearenv"]
        env = {"PATH": DEFAULT_PATH, **spec.env}
        for key, value in env.items():
            out += ["--setenv", key, value]
        if ids is not None:
            out += ["--uid", str(ids[0]), "--gid", str(ids[1])]
        return [*out, "--", *spec.argv]

    @staticmethod
    def missing_mount_parents(rootfs: str, mounts: Sequence[Mount]) -> list[str]:
        """Folders of the image that must be rebuilt to hold mount points it lacks.

        bwrap cannot create a mount point inside a read-only bind: each folder holding a
        missing target becomes a tmpfs with the image's own entries bound back into it (so
        ``/flywheel/v0`` keeps the gear's ``run`` script and gains ``config.json``), and is
        remounted read-only once the job's mounts are in place.  A root filesystem this host
        cannot see is taken as it is.
        """
        parents: list[str] = []
        if not os.path.isdir(rootfs):
            return parents  # not visible from here (e.g. a compute node's path): trust the image
        for mount in mounts:
            parent = posixpath.dirname(mount.target.rstrip("/"))
            if os.path.lexists(rootfs + mount.target) or parent in parents or parent == "/":
                continue
            if not os.path.isdir(rootfs + parent):
                raise InvalidInputError(f"the image has no folder {parent} for {mount.target}")
            parents.append(parent)
        return parents

    @staticmethod
    def rebuild_args(rootfs: str, parents: Sequence[str], mounts: Sequence[Mount]) -> list[str]:
        targets = {m.target for m in mounts}
        args: list[str] = []
        for parent in parents:
            args += ["--tmpfs", parent]
            for name in sorted(os.listdir(rootfs + parent)):
                inner = posixpath.join(parent, name)
                if inner not in targets:
                    args += ["--ro-bind", rootfs + inner, inner]
        return args

    def root_args(self, image: str) -> list[str]:
        """The binds making up ``/`` for ``image``."""
        if image == "host":
            args: list[str] = []
            for path in HOST_PATHS:
                args += ["--ro-bind-try", path, path]
            return args
        return ["--ro-bind", self.rootfs(image), "/"]

    def rootfs(self, image: str) -> str:
        """The root-filesystem folder for a ``rootfs:`` path or an OCI reference."""
        if image.startswith("rootfs:"):
            path = image.removeprefix("rootfs:")
            if not path.startswith("/"):
                raise InvalidInputError(f"rootfs path must be absolute: {image!r}")
            return path
        if image in self.images:
            return self.images[image]
        if self.cache_dir is not None:
            return unpack_image(image, self.cache_dir, self.transport, self.podman)
        raise InvalidInputError(
            f"bwrap cannot resolve image {image!r}: use rootfs:/path or host, map the image "
            "to a rootfs folder, or configure an unpack cache"
        )

    def version(self, transport: Transport) -> str | None:
        try:
            done = transport.run([self.binary, "--version"], timeout=30)
        except CommandError:
            return None
        return done.stdout.strip().removeprefix("bubblewrap ") or None
