"""The runtime of backends that start containers themselves (Kubernetes runs OCI images).

Such a backend reads the ContainerSpec (image, argv, env, resources) directly; this runtime
exists so the broker's flow stays the same, and it has no local engine to ask.
"""

from __future__ import annotations

from broker.runtimes.base import ContainerRuntime
from broker.task import ContainerSpec
from broker.transport import Transport


class NativeRuntime(ContainerRuntime):
    """No local command: the backend's own container engine runs the spec."""

    name = "native"
    binary = ""

    def argv(self, spec: ContainerSpec) -> list[str]:
        return list(spec.argv)

    def version(self, transport: Transport) -> str | None:
        return None
