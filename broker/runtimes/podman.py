"""Podman: the OCI command line of :mod:`broker.runtimes.oci` with podman's differences.

- GPUs use CDI: ``--device nvidia.com/gpu=all`` (needs ``nvidia-ctk cdi generate`` on the
  host).  All of the host's GPUs are exposed; which ones a job may use is the scheduler's
  business (Slurm's GPU cgroups and ``CUDA_VISIBLE_DEVICES``).
- ``--entrypoint`` is passed as a JSON array: podman parses a value that is valid JSON as an
  argv list, so a plain command name beginning with ``[`` would otherwise change meaning.
- ``version`` is the client's: podman has no daemon.
- ``oom_killed``: podman < 5.0 never sets ``.State.OOMKilled`` (containers/podman#13102,
  fixed in 5.0 by #21523): conmon 2.1 creates its ``oom`` marker in the podman process's
  working directory, where podman 4 does not look.  On podman 4 an OOM kill shows up only as
  exit status 137.
"""

from __future__ import annotations

import json

from broker.runtimes.oci import OciRuntime


class PodmanRuntime(OciRuntime):
    """Runs containers with the podman CLI (see :class:`OciRuntime` for the options)."""

    name = "podman"
    default_binary = "podman"
    version_format = "{{.Client.Version}}"

    def gpu_args(self, gpus: int) -> list[str]:
        return ["--device", "nvidia.com/gpu=all"]

    def entrypoint(self, command: str) -> str:
        return json.dumps([command])
