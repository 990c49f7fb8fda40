"""Docker: the OCI command line of :mod:`broker.runtimes.oci` unchanged.

``--gpus N`` asks the NVIDIA container toolkit for N GPUs.  ``version`` is the server's, so
a client without a reachable engine counts as unavailable.
"""

from __future__ import annotations

from broker.runtimes.oci import OciRuntime


class DockerRuntime(OciRuntime):
    """Runs containers with the docker CLI (see :class:`OciRuntime` for the options)."""

    name = "docker"
    default_binary = "docker"
    version_format = "{{.Server.Version}}"
