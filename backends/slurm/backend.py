"""The Slurm backend: sbatch scripts (arrays for batches), batched squeue polls, scancel.

Every Slurm command goes through :meth:`SlurmBackend._call`, which runs it on the configured
transport (this host, or a login node over SSH) with the site's timeout, so failures carry
command, exit code, stdout and stderr.  Slurm supervises the containers itself; logs land in
each task's ``logs/output.log``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from backends.base import Backend, BackendState, TaskStatus
from backends.slurm.config import SlurmSiteConfig
from backends.slurm.script import ARRAY_LOG_DIR, job_script
from backends.slurm.states import (
    Snapshot,
    cancel_words,
    parse_sacct,
    parse_squeue,
    record_status,
)
from broker.commands import CommandError, CommandResult
from broker.runtimes.base import ContainerRuntime
from broker.task import Resources, TaskSpec
from broker.transport import LocalTransport, Transport
from catalog.errors import GearbrokerError

_CANCEL_ERROR = re.compile(r"job id (\d+(?:_\d+)?)")


class SlurmSubmitError(GearbrokerError):
    """sbatch refused a submission or the queue had no room; nothing of the batch is queued."""


class SlurmBackend(Backend):
    """Runs TaskSpecs as Slurm batch jobs; a batch of one gear becomes job arrays."""

    name: ClassVar[str] = "slurm"
    submit_command: ClassVar[str] = "sbatch"
    submit_flags: ClassVar[tuple[str, ...]] = ("--parsable",)
    status_command: ClassVar[str] = "squeue"
    status_flags: ClassVar[tuple[str, ...]] = ("--json", "-t", "all")
    cancel_command: ClassVar[str] = "scancel"
    accounting_command: ClassVar[str] = "sacct"
    accounting_flags: ClassVar[tuple[str, ...]] = (
        "-X", "-n", "-P", "--format=JobID,State,ExitCode,Start,End,NodeList",
    )  # fmt: skip

    def __init__(
        self,
        site: SlurmSiteConfig,
        transport: Transport | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.site = site
        self.default_runtime = site.runtime
        self.transport = transport if transport is not None else make_transport(site)
        self._clock = clock
        self._sleep = sleep
        self._snapshot: Snapshot | None = None
        self._snapshot_at = 0.0
        self._cancelled: set[str] = set()
        self._accounting: bool | None = {"yes": True, "no": False}.get(site.accounting)
        self._array_log_dir_ready = False
        self._user: str | None = None

    # -- commands ------------------------------------------------------------------------
    def _call(
        self, name: str, *args: str, input: str | None = None, check: bool = True
    ) -> CommandResult:
        """Run Slurm command ``name`` with ``args`` through the transport (the one helper)."""
        argv = [self.site.command(name), *args]
        return self.transport.run(
            argv, timeout=self.site.command_timeout_s, input=input, check=check
        )

    # -- submission ----------------------------------------------------------------------
    def job_script(self, tasks: Sequence[TaskSpec], runtime: ContainerRuntime) -> str:
        """The script ``sbatch`` receives for ``tasks`` (one job, or one array)."""
        return job_script(tasks, runtime, self.site, array_limit=self.site.array_concurrency)

    def render(self, task: TaskSpec, runtime: ContainerRuntime) -> str:
        return self.job_script([task], runtime)

    def submit(self, task: TaskSpec, runtime: ContainerRuntime) -> str:
        return self._sbatch(self.job_script([task], runtime))

    def submit_many(self, tasks: Sequence[TaskSpec], runtime: ContainerRuntime) -> list[str]:
        """Submit tasks with equal resources as arrays of at most the chunk size each.

        Returns ``"<array id>_<index>"`` per task, in input order.  When a chunk fails, the
        chunks already queued are cancelled and SlurmSubmitError is raised.
        """
        groups: dict[Resources, list[int]] = {}
        for index, task in enumerate(tasks):
            groups.setdefault(task.resources, []).append(index)
        size = self.site.max_array_size
        if self.site.max_submit_jobs:
            size = min(size, self.site.max_submit_jobs)
        chunks = [
            indices[start : start + size]
            for indices in groups.values()
            for start in range(0, len(indices), size)
        ]
        # Render everything first: a task that cannot be expressed fails before anything queues.
        scripts = [self.job_script([tasks[i] for i in chunk], runtime) for chunk in chunks]
        ids = [""] * len(tasks)
        submitted: list[str] = []
        try:
            for chunk, script in zip(chunks, scripts, strict=True):
                self._wait_for_room(len(chunk))
                if len(chunk) > 1:
                    self._ensure_array_log_dir()
                job_id = self._sbatch(script)
                submitted.append(job_id)
                for position, index in enumerate(chunk):
                    ids[index] = f"{job_id}_{position}" if len(chunk) > 1 else job_id
        except GearbrokerError as exc:
            undo = ""
            if submitted:
                try:
                    self._call(self.cancel_command, *submitted, check=False)
                except GearbrokerError as cancel_exc:
                    undo = f"; cancelling the queued jobs {submitted} failed too: {cancel_exc}"
            raise SlurmSubmitError(
                f"submitting {len(tasks)} tasks to Slurm failed: {exc}{undo}"
            ) from exc
        return ids

    def _sbatch(self, script: str) -> str:
        result = self._call(self.submit_command, *self.submit_flags, input=script)
        job_id = result.stdout.strip().split(";", 1)[0]
        if not job_id.isdigit():
            raise SlurmSubmitError(f"sbatch printed {result.stdout.strip()!r}, not a job id")
        self._snapshot = None
        return job_id

    def _ensure_array_log_dir(self) -> None:
        if not self._array_log_dir_ready:
            self.transport.run(
                ["mkdir", "-p", "--", f"{self.site.scratch_root}/{ARRAY_LOG_DIR}"],
                timeout=self.site.command_timeout_s,
            )
            self._array_log_dir_ready = True

    def _wait_for_room(self, count: int) -> None:
        """Block until ``count`` more jobs fit under ``max_submit_jobs`` (0: no limit)."""
        limit = self.site.max_submit_jobs
        if not limit:
            return
        if self._user is None:
            self._user = self.transport.run(["id", "-un"]).stdout.strip()
        deadline = self._clock() + self.site.submit_wait_s
        while True:
            active = self._squeue(fresh=True).active_jobs(self._user)
            if active + count <= limit:
                return
            if self._clock() >= deadline:
                raise SlurmSubmitError(
                    f"the Slurm queue stays full: {active} of {limit} jobs (MaxSubmitJobs) "
                    f"are queued for {self._user} after {self.site.submit_wait_s:.0f} s"
                )
            self._sleep(max(self.site.status_min_interval_s, 1.0))

    # -- monitoring ----------------------------------------------------------------------
    def status(self, ids: Sequence[str]) -> list[TaskStatus]:
        """One squeue call for all ``ids`` (cached for ``status_min_interval_s``).

        Ids squeue does not show are looked up once more (a fresh squeue, then sacct when
        accounting is available); still unknown, they are MISSING (or CANCELLED when this
        backend cancelled them), never left running.
        """
        found = self._lookup(ids, self._squeue(fresh=False))
        missing = [i for i in ids if i not in found]
        if missing:
            found.update(self._lookup(missing, self._squeue(fresh=True)))
            missing = [i for i in missing if i not in found]
        if missing and self._has_accounting():
            found.update(self._sacct(missing))
        return [found.get(i) or self._missing(i) for i in ids]

    def _lookup(self, ids: Sequence[str], snapshot: Snapshot) -> dict[str, TaskStatus]:
        statuses = {}
        for external_id in ids:
            record = snapshot.find(external_id)
            if record is not None:
                here = self._cancelled_here(external_id)
                statuses[external_id] = record_status(external_id, record, cancelled_here=here)
        return statuses

    def _missing(self, external_id: str) -> TaskStatus:
        if self._cancelled_here(external_id):
            words = cancel_words(True, None) + " (Slurm has dropped its record)"
            return TaskStatus(external_id, BackendState.CANCELLED, message=words)
        return TaskStatus(
            external_id,
            BackendState.MISSING,
            message=(
                f"Slurm no longer knows job {external_id}: it left squeue (finished more than "
                "MinJobAge seconds ago, or was removed) and accounting (sacct) has no record; "
                "its outcome is unknown"
            ),
        )

    def _squeue(self, *, fresh: bool) -> Snapshot:
        now = self._clock()
        stale = now - self._snapshot_at >= self.site.status_min_interval_s
        if self._snapshot is None or stale or fresh:
            # Slurm 22.05 ignores -j with --json: one call returns every job, we filter.
            text = self._call(self.status_command, *self.status_flags).stdout
            self._snapshot = parse_squeue(text)
            self._snapshot_at = now
        return self._snapshot

    def _has_accounting(self) -> bool:
        if self._accounting is None:
            result = self._call("scontrol", "show", "config", check=False)
            kind = re.search(r"^AccountingStorageType\s*=\s*(\S+)", result.stdout, re.M)
            self._accounting = kind is not None and not kind.group(1).endswith("/none")
        return self._accounting

    def _sacct(self, ids: Sequence[str]) -> dict[str, TaskStatus]:
        try:
            result = self._call(
                self.accounting_command, *self.accounting_flags, "-j", ",".join(ids)
            )
        except CommandError:
            return {}
        here = frozenset(i for i in ids if self._cancelled_here(i))
        statuses = parse_sacct(result.stdout, cancelled=here)
        return {i: statuses[i] for i in ids if i in statuses}

    def _cancelled_here(self, external_id: str) -> bool:
        """Whether this backend cancelled the job, or the whole array it belongs to."""
        return bool({external_id, external_id.split("_", 1)[0]} & self._cancelled)

    # -- cancellation --------------------------------------------------------------------
    def cancel(self, ids: Sequence[str]) -> list[bool]:
        """``scancel`` all ``ids`` in one call; an id without ``_N`` cancels a whole array."""
        if not ids:
            return []
        result = self._call(self.cancel_command, *ids, check=False)
        refused = set(_CANCEL_ERROR.findall(result.stderr))
        if result.returncode != 0 and not refused:
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr)
        self._cancelled.update(i for i in ids if i not in refused)
        self._snapshot = None
        return [i not in refused for i in ids]

    def close(self) -> None:
        self.transport.close()


def make_transport(site: SlurmSiteConfig) -> Transport:
    """SSH to ``site.ssh_host`` when set, else run on this host (the login node)."""
    if not site.ssh_host:
        return LocalTransport()
    from broker.ssh import SSHTransport

    return SSHTransport(
        site.ssh_host,
        port=site.ssh_port,
        user=site.ssh_user,
        key_file=site.ssh_key,
        known_hosts=site.ssh_known_hosts,
        use_agent=site.ssh_agent,
        connect_timeout=site.ssh_connect_timeout_s,
    )
