"""Runtime names -> classes, construction from configuration, and ``runtime = "auto"``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from broker.runtimes.apptainer import ApptainerRuntime, SingularityRuntime
from broker.runtimes.base import ContainerRuntime, RuntimeUnavailableError, host_label
from broker.runtimes.bwrap import BwrapRuntime
from broker.runtimes.docker import DockerRuntime
from broker.runtimes.podman import PodmanRuntime
from broker.transport import Transport
from catalog.errors import ConfigError, InvalidInputError

RUNTIMES: dict[str, type[ContainerRuntime]] = {
    "podman": PodmanRuntime,
    "docker": DockerRuntime,
    "apptainer": ApptainerRuntime,
    "singularity": SingularityRuntime,
    "bwrap": BwrapRuntime,
}
DEFAULT_PREFERENCE = ("podman", "docker", "apptainer", "bwrap")


def make_runtime(name: str, **options: Any) -> ContainerRuntime:
    """A runtime by name; InvalidInputError lists the choices, ConfigError bad options."""
    cls = RUNTIMES.get(name)
    if cls is None:
        choices = ", ".join(sorted(RUNTIMES))
        raise InvalidInputError(f"unknown container runtime {name!r}; choose one of: {choices}")
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"invalid options for runtime {name!r}: {exc}") from exc


def detect_runtime(
    transport: Transport,
    prefer: Sequence[str] = DEFAULT_PREFERENCE,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> ContainerRuntime:
    """The first runtime of ``prefer`` that answers on the transport's host.

    ``options`` gives per-runtime constructor options.  Raises RuntimeUnavailableError naming
    every runtime tried when none is usable.
    """
    options = options or {}
    for name in prefer:
        runtime = make_runtime(name, **options.get(name, {}))
        if runtime.available(transport):
            return runtime
    raise RuntimeUnavailableError(
        f"no container runtime found on {host_label(transport)} (tried {', '.join(prefer)}); "
        "install one or set --runtime"
    )
