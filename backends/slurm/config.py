"""The ``[backends.slurm]`` site configuration, validated once into :class:`SlurmSiteConfig`.

Keys (TOML types; strings from ``GEARBROKER_BACKENDS__SLURM__*`` convert; a dotted key from a
sub-table such as ``ssh.host`` is the same as ``ssh_host``):

``scratch_root`` (str, required)
    Shared-filesystem folder visible from the broker, the login node and every compute node;
    job folders live below it and array-level Slurm output goes to ``<scratch_root>/.slurm``.
``partition``, ``account``, ``qos`` (str)
    Passed as ``--partition`` (a comma list is allowed), ``--account``, ``--qos``.
``runtime`` (str, default ``apptainer``)
    Container runtime name for ``broker.runtimes.make_runtime`` on this site.
``setup`` (list of str)
    Shell lines run before the container on the compute node (``module load apptainer``).
    They are the admin's shell code, one line each: no newline, NUL or carriage return.
``sbatch_flags`` (list of str)
    Extra long-form sbatch options (``--constraint=avx2``, ``--exclusive``); flags that
    gearbroker sets itself (``--time``, ``--array``, ``--output``, ``--wrap``...) are refused.
``memory_flag`` (``mem`` | ``mem-per-cpu``, default ``mem``)
    How a memory request is expressed; ``mem-per-cpu`` divides by the CPU count.
``gpu_type`` (str)
    GRES type, giving ``--gres=gpu:<type>:N``.
``default_walltime_s`` (int)
    ``--time`` for gears that declare no walltime.
``array_concurrency`` (int, default 50)
    K in ``--array=0-(N-1)%K``: how many tasks of one array run at once (0: no limit).
``max_array_size`` (int, default 1000)
    Tasks per array submission (must be below the cluster's ``MaxArraySize``).
``max_submit_jobs`` (int, default 0)
    The per-user ``MaxSubmitJobs`` limit (0: none).  Arrays are chunked to fit it, and
    ``submit_many`` waits up to ``submit_wait_s`` (default 3600) for room in the queue.
``accounting`` (``auto`` | ``yes`` | ``no``, default ``auto``)
    Whether ``sacct`` is consulted for jobs ``squeue`` no longer shows.
``status_min_interval_s`` (float, default 5)
    ``squeue`` is called at most once per this interval; answers in between are cached.
``command_timeout_s`` (float, default 60)
    Timeout of each Slurm command.
``bin_dir`` (str)
    Folder of the Slurm commands when they are not on the (remote) PATH.
``ssh_host`` (str; unset means the broker runs on the login node), ``ssh_port`` (int, 22),
``ssh_user`` (str), ``ssh_key`` (str, a private key file), ``ssh_known_hosts`` (str, default
``~/.ssh/known_hosts``), ``ssh_agent`` (bool, default true), ``ssh_connect_timeout_s``
(float, 10)
    The SSH login node (see :class:`broker.ssh.SSHTransport`).
``dask_cores``, ``dask_memory``, ``dask_walltime``, ``dask_processes``
    Per-worker-job resources of ``gearbroker cluster slurm`` (defaults 1, ``2GB``,
    ``01:00:00``, 1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from backends.siteconfig import convert
from catalog.errors import ConfigError

#: Partition, account, QoS and GRES names: no leading dash, no whitespace, no shell syntax.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
PARTITIONS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*(,[A-Za-z0-9][A-Za-z0-9_.+-]*)*$")
#: A path that may appear in an #SBATCH line (no whitespace, no %-patterns, no quotes).
DIRECTIVE_PATH_RE = re.compile(r"^/[A-Za-z0-9_./+@,:=-]*$")
_FLAG_RE = re.compile(r"^--([a-z][a-z0-9-]*)(=[A-Za-z0-9_.,:=/+@%-]+)?$")
#: Flags gearbroker writes itself; a site flag must not override or smuggle them.
RESERVED_FLAGS = frozenset(
    {
        "account", "array", "chdir", "cpus-per-task", "error", "gres", "gpus", "input",
        "job-name", "mem", "mem-per-cpu", "mem-per-gpu", "open-mode", "output", "parsable",
        "partition", "qos", "time", "wait", "wrap",
    }
)  # fmt: skip


@dataclass(frozen=True)
class SlurmSiteConfig:
    """One site's Slurm settings; build with :meth:`from_mapping` (which validates)."""

    scratch_root: str
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    runtime: str = "apptainer"
    setup: tuple[str, ...] = ()
    sbatch_flags: tuple[str, ...] = ()
    memory_flag: str = "mem"
    gpu_type: str | None = None
    default_walltime_s: int | None = None
    array_concurrency: int = 50
    max_array_size: int = 1000
    max_submit_jobs: int = 0
    submit_wait_s: float = 3600.0
    accounting: str = "auto"
    status_min_interval_s: float = 5.0
    command_timeout_s: float = 60.0
    bin_dir: str | None = None
    ssh_host: str | None = None
    ssh_port: int = 22
    ssh_user: str | None = None
    ssh_key: str | None = None
    ssh_known_hosts: str = "~/.ssh/known_hosts"
    ssh_agent: bool = True
    ssh_connect_timeout_s: float = 10.0
    dask_cores: int = 1
    dask_memory: str = "2GB"
    dask_walltime: str = "01:00:00"
    dask_processes: int = 1

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> SlurmSiteConfig:
        """Validate ``section`` (the ``[backends.slurm]`` table); raise ConfigError naming keys."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for raw_key, value in section.items():
            key = raw_key.replace(".", "_").replace("-", "_")
            if key not in known:
                raise ConfigError(f"backends.slurm: unknown key {raw_key!r}")
            values[key] = _convert(key, str(known[key].type), value)
        if "scratch_root" not in values:
            raise ConfigError("backends.slurm.scratch_root is required (a shared folder)")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ConfigError for any value that could break or inject into a script."""
        _check_path("scratch_root", self.scratch_root)
        if self.partition is not None and not PARTITIONS_RE.fullmatch(self.partition):
            raise ConfigError(f"backends.slurm.partition: invalid name {self.partition!r}")
        for key in ("account", "qos", "gpu_type", "runtime"):
            value = getattr(self, key)
            if value is not None and not NAME_RE.fullmatch(value):
                raise ConfigError(f"backends.slurm.{key}: invalid name {value!r}")
        for line in self.setup:
            if any(c in line for c in "\n\r\x00"):
                raise ConfigError(f"backends.slurm.setup: line {line!r} holds a line break")
        for flag in self.sbatch_flags:
            match = _FLAG_RE.fullmatch(flag)
            if not match:
                raise ConfigError(
                    f"backends.slurm.sbatch_flags: {flag!r} is not a long option such as "
                    "--constraint=avx2 (no spaces, quotes or line breaks)"
                )
            if match.group(1) in RESERVED_FLAGS:
                raise ConfigError(
                    f"backends.slurm.sbatch_flags: --{match.group(1)} is set by gearbroker"
                )
        if self.memory_flag not in ("mem", "mem-per-cpu"):
            raise ConfigError("backends.slurm.memory_flag must be mem or mem-per-cpu")
        if self.accounting not in ("auto", "yes", "no"):
            raise ConfigError("backends.slurm.accounting must be auto, yes or no")
        if self.bin_dir is not None:
            _check_path("bin_dir", self.bin_dir)
        for key in ("array_concurrency", "max_submit_jobs"):
            if getattr(self, key) < 0:
                raise ConfigError(f"backends.slurm.{key} must be >= 0")
        for key in ("max_array_size", "ssh_port", "dask_cores", "dask_processes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"backends.slurm.{key} must be >= 1")
        if self.default_walltime_s is not None and self.default_walltime_s < 1:
            raise ConfigError("backends.slurm.default_walltime_s must be >= 1")
        if self.ssh_host is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]*",
                                                      self.ssh_host):  # fmt: skip
            raise ConfigError(f"backends.slurm.ssh_host: invalid host {self.ssh_host!r}")

    def command(self, name: str) -> str:
        """The path or name of Slurm command ``name`` (``sbatch``, ``squeue``...)."""
        return f"{self.bin_dir.rstrip('/')}/{name}" if self.bin_dir else name


def _check_path(key: str, value: str) -> None:
    if not DIRECTIVE_PATH_RE.fullmatch(value) or "/../" in value + "/":
        raise ConfigError(
            f"backends.slurm.{key}: {value!r} must be an absolute path of letters, digits "
            "and _ . / + @ , : = - (no spaces, % or line breaks)"
        )


def _convert(key: str, kind: str, value: Any) -> Any:
    """Convert a TOML or environment value to the field's type; ConfigError when it cannot."""
    return convert(f"backends.slurm.{key}", kind, value)
