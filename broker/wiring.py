"""Building backends, runtimes and dispatchers from the merged settings.

Runtime options come from the open tables ``[runtimes.<name>]`` (e.g. podman ``binary``,
``extra_args``; bwrap ``images``); backend options from ``[backends.<name>]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backends.base import Backend
from broker.config import Settings
from broker.dispatch import Dispatcher
from broker.retry import RetrySettings
from broker.runtimes import detect_runtime, make_runtime
from broker.runtimes.base import ContainerRuntime
from broker.transport import LocalTransport
from catalog.catalog import Catalog
from catalog.errors import InvalidInputError

BACKENDS = ("local", "slurm", "kubernetes")
RUNTIME_NAMES = ("podman", "docker", "apptainer", "bwrap")


def runtime_options(settings: Settings, name: str) -> dict[str, Any]:
    return dict(settings.section(f"runtimes.{name}"))


def runtime_factory(
    settings: Settings,
) -> Callable[[str | None, str | None], ContainerRuntime]:
    """``make(requested, preferred)``: the job's runtime, else the gear's (or the backend's
    site default, passed as ``preferred`` by the dispatcher), else ``broker.runtime``."""

    def make(requested: str | None, preferred: str | None) -> ContainerRuntime:
        name = requested or preferred or settings.runtime
        if name == "auto":
            return detect_runtime(
                LocalTransport(),
                options={
                    n: runtime_options(settings, n)
                    for n in ("podman", "docker", "apptainer", "bwrap")
                },
            )
        return make_runtime(name, **runtime_options(settings, name))

    return make


def backend_factory(settings: Settings) -> Callable[[str], Backend]:
    def make(name: str) -> Backend:
        if name == "local":
            from backends.local.backend import LocalBackend

            return LocalBackend(
                scheduler_address=settings.get("backends.local.scheduler"),
                workers=settings.get("backends.local.workers"),
                max_concurrent=settings.max_concurrent or None,
                runtime_options={n: runtime_options(settings, n) for n in RUNTIME_NAMES},
            )
        if name == "slurm":
            from backends.slurm.backend import SlurmBackend
            from backends.slurm.config import SlurmSiteConfig

            return SlurmBackend(SlurmSiteConfig.from_mapping(settings.section("backends.slurm")))
        if name == "kubernetes":
            from backends.kubernetes import KubernetesBackend, KubernetesSiteConfig

            section = settings.section("backends.kubernetes")
            return KubernetesBackend(KubernetesSiteConfig.from_mapping(section))
        raise InvalidInputError(f"unknown or unavailable backend {name!r}: {', '.join(BACKENDS)}")

    return make


def make_dispatcher(
    cat: Catalog,
    settings: Settings,
    backends: tuple[str, ...] | None = None,
) -> Dispatcher:
    return Dispatcher(
        cat,
        backend_factory(settings),
        runtime_factory(settings),
        settings.work_dir,
        backend_names=backends or BACKENDS,
        poll_interval=settings.poll_interval,
        max_in_flight=settings.max_concurrent * 4 if settings.max_concurrent else 0,
        max_per_user=int(settings.get("broker.max_per_user")),
        max_per_project=int(settings.get("broker.max_per_project")),
        retry=RetrySettings(
            max_retries=int(settings.get("broker.max_retries")),
            backoff_seconds=float(settings.get("broker.retry_backoff")),
            oom_memory_factor=float(settings.get("broker.oom_memory_factor")),
            oom_memory_cap_mb=int(settings.get("broker.oom_memory_cap_mb")),
        ),
    )
