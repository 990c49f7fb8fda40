"""Podman: the OCI command line of :mod:`broker.runtimes.oci` with podman's differences.

- GPUs use CDI: ``--device nvidia.com/gpu=all`` (needs ``nvidia-ctk cdi generate`` on the
  host).  All of the host's GPUs are exposed; which ones a job may use is the scheduler's
  business (Slurm's GPU cgroups and ``CUDA_VISIBLE_DEVICES``).
- ``--entrypoint`` is passed as a JSON array: podman parses a value that is valid JSON as an
  argv list, so a plain command name beginning with ``[`` would otherwise change meaning.
- ``version`` is the client's: podman has no daemon.
- ``oom_killed``: podman < 5.0 never sets ``.State.OOMKilled`` (containers/podman#13102,
  fixed in 5.0 by #21523): conmon 2.1 creates its ``oom`` marker in the podman process's
  working directory, where podman 4 does not look.  So :meth:`PodmanRuntime.oom_killed` also
  accepts that marker in ``cwd``, the folder the CLI ran in (the local backend's supervisor
  runs podman in the job folder, one folder per container).
"""

from __future__ import annotations

import json
from pathlib import Path

from broker.runtimes.oci import OciRuntime
from broker.task import ContainerSpec
from broker.transport import Transport


class PodmanRuntime(OciRuntime):
    """Runs containers with the podman CLI (see :class:`OciRuntime` for the options)."""

    name = "podman"
    default_binary = "podman"
    version_format = "{{.Client.Version}}"

    def gpu_args(self, gpus: int) -> list[str]:
        return ["--device", "nvidia.com/gpu=all"]

    def entrypoint(self, command: str) -> str:
        return json.dumps([command])

    def oom_killed(self, spec: ContainerSpec, transport: Transport, cwd: str | None = None) -> bool:
        if self.removes_itself(spec):
            return False
        if super().oom_killed(spec, transport, cwd):
            return True
        return cwd is not None and (Path(cwd) / "oom").is_file()
