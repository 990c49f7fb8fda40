"""A test runtime that runs the container's argv directly on the host (no isolation)."""

from __future__ import annotations

from broker.runtimes.base import ContainerRuntime
from broker.task import ContainerSpec
from broker.transport import Transport


class HostRuntime(ContainerRuntime):
    """argv = spec.argv; the supervisor signals the process group to stop it."""

    name = "host-test"
    binary = "sh"

    def argv(self, spec: ContainerSpec) -> list[str]:
        return list(spec.argv)

    def version(self, transport: Transport) -> str | None:
        return "test"
