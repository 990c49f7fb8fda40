"""A test runtime for the fork server's tests (kept light: supervisors import it)."""

from __future__ import annotations

from broker.task import ContainerSpec
from tests.backends.hostruntime import HostRuntime


class SlowRemoveRuntime(HostRuntime):
    """Runs argv on the host; its "container removal" takes 2 s, then leaves ``removed``."""

    name = "slow-remove-test"

    def remove_argv(self, spec: ContainerSpec) -> list[str]:
        return ["sh", "-c", "sleep 2; touch removed"]
