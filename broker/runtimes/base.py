"""The container-runtime axis: how one ContainerSpec becomes a command line.

A runtime knows its own flags and nothing of schedulers; a backend knows its scheduler and
nothing of runtime flags.  Any runtime combines with any backend (unless the backend says
otherwise, e.g. Kubernetes runs OCI images itself).
"""

from __future__ import annotations

import platform
from abc import ABC, abstractmethod
from typing import ClassVar

from broker.task import ContainerSpec
from broker.transport import LocalTransport, Transport
from catalog.errors import GearbrokerError


class RuntimeUnavailableError(GearbrokerError):
    """The runtime's binary is missing or unusable on the machine that would run it."""


class ContainerRuntime(ABC):
    """Builds argv lists for one container engine."""

    name: ClassVar[str]
    #: The CLI program; an instance attribute so a site can point at another path.
    binary: str

    @abstractmethod
    def argv(self, spec: ContainerSpec) -> list[str]:
        """The command that runs ``spec`` in the foreground, output on stdout/stderr."""

    def stop_argv(self, spec: ContainerSpec) -> list[str] | None:
        """A command that stops the running container by name; None: signal the process."""
        return None

    def removes_itself(self, spec: ContainerSpec) -> bool:
        """Whether :meth:`argv` has the engine remove the container when it exits by itself
        (then :meth:`remove_argv` is needed only after a stop or kill)."""
        return False

    def remove_argv(self, spec: ContainerSpec) -> list[str] | None:
        """A command that removes the exited container (after inspection); None if none."""
        return None

    def oom_killed(self, spec: ContainerSpec, transport: Transport, cwd: str | None = None) -> bool:
        """Whether the exited container was killed for exceeding its memory limit.

        ``cwd`` is the folder the runtime's CLI ran in (some engines leave markers there).
        """
        return False

    def available(self, transport: Transport) -> bool:
        """Whether the runtime can run on the transport's host."""
        return self.version(transport) is not None

    def ensure_available(self, transport: Transport) -> str:
        """The runtime's version; raise RuntimeUnavailableError when it is missing."""
        found = self.version(transport)
        if found is None:
            raise RuntimeUnavailableError(
                f"{self.binary} not found on {host_label(transport)}; "
                "install it or choose another runtime with --runtime"
            )
        return found

    @abstractmethod
    def version(self, transport: Transport) -> str | None:
        """The runtime's version string, or None if it is not installed."""

    def image_digest(self, image: str, transport: Transport) -> str | None:
        """The content digest of ``image`` as the runtime resolves it (None if unknown)."""
        return None


def host_label(transport: Transport) -> str:
    """A human name for the machine a transport reaches (for error messages)."""
    host = getattr(transport, "host", None)
    if isinstance(host, str) and host:
        return host
    if isinstance(transport, LocalTransport):
        return platform.node() or "localhost"
    return transport.name
