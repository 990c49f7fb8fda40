"""Slurm backend: sbatch scripts and job arrays, batched squeue monitoring, scancel.

Public entry points: :class:`SlurmBackend`, :class:`SlurmSiteConfig` (the
``[backends.slurm]`` keys are documented in :mod:`backends.slurm.config`).
"""

from __future__ import annotations

from backends.slurm.backend import SlurmBackend, SlurmSubmitError, make_transport
from backends.slurm.config import SlurmSiteConfig

__all__ = ["SlurmBackend", "SlurmSiteConfig", "SlurmSubmitError", "make_transport"]
