"""Where commands run: on this host, or (for Slurm login nodes) over SSH.

Backends and runtimes never call subprocess themselves; they ask a Transport.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

from broker.commands import DEFAULT_TIMEOUT_S, CommandResult, run_command


class Transport(ABC):
    """Runs argv lists somewhere and returns their captured output."""

    name: str = "transport"

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Run ``argv``; raise CommandError on failure when ``check``."""

    def close(self) -> None:
        """Release connections (no-op for local)."""


class LocalTransport(Transport):
    """Runs commands on this host."""

    name = "local"

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> CommandResult:
        return run_command(argv, timeout=timeout, input=input, env=env, check=check)
