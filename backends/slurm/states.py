"""Slurm job records -> :class:`TaskStatus`: the state table, exit codes, array task sets.

External ids are ``"<job id>"`` for a single job and ``"<array job id>_<task index>"`` for an
array task (what ``scancel`` and ``sacct`` accept).  ``squeue --json`` (Slurm 22.05 and later)
lists running and finished array tasks one by one, but still-pending tasks only inside the
array's own record (``array_task_string`` such as ``"2,4-9%5"``).
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from backends.base import BackendState, TaskStatus

_S = BackendState
#: Slurm base state -> (our state, reason told to users; None: no extra words).
STATE_TABLE: Mapping[str, tuple[BackendState, str | None]] = {
    "PENDING": (_S.PENDING, None),
    "CONFIGURING": (_S.PENDING, "nodes are being configured"),
    "REQUEUED": (_S.PENDING, "requeued"),
    "REQUEUE_HOLD": (_S.PENDING, "requeued and held"),
    "REQUEUE_FED": (_S.PENDING, "requeued"),
    "RESIZING": (_S.RUNNING, None),
    "RUNNING": (_S.RUNNING, None),
    "COMPLETING": (_S.RUNNING, "completing"),
    "SUSPENDED": (_S.RUNNING, "suspended by Slurm"),
    "STOPPED": (_S.RUNNING, "stopped by Slurm"),
    "SIGNALING": (_S.RUNNING, None),
    "STAGE_OUT": (_S.RUNNING, None),
    "COMPLETED": (_S.COMPLETED, None),
    "FAILED": (_S.FAILED, None),
    "SPECIAL_EXIT": (_S.FAILED, "ended with Slurm's special exit state"),
    "CANCELLED": (_S.CANCELLED, None),
    "REVOKED": (_S.CANCELLED, "revoked by a federated cluster"),
    "TIMEOUT": (_S.TIMEOUT, None),
    "DEADLINE": (_S.TIMEOUT, "reached its deadline before it could finish"),
    "OUT_OF_MEMORY": (_S.OUT_OF_MEMORY, "killed by Slurm for using more memory than requested"),
    "NODE_FAIL": (_S.NODE_FAIL, None),
    "BOOT_FAIL": (_S.NODE_FAIL, "its node failed to boot"),
    "PREEMPTED": (_S.NODE_FAIL, "preempted by a higher-priority job (safe to retry)"),
}
_ARRAY_ID = re.compile(r"^(\d+)_(\d+)$")
_TASK_ITEM = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


@dataclass(frozen=True)
class TaskSet:
    """The task indices of an ``array_task_string`` such as ``"0-9:2,15%4"``."""

    ranges: tuple[tuple[int, int, int], ...]

    @classmethod
    def parse(cls, text: str) -> TaskSet:
        body = text.split("%", 1)[0].strip()
        ranges = []
        for item in filter(None, body.split(",")):
            match = _TASK_ITEM.match(item)
            if match:
                start = int(match.group(1))
                end = int(match.group(2) or start)
                ranges.append((start, end, int(match.group(3) or 1)))
        return cls(tuple(ranges))

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and any(
            lo <= index <= hi and (index - lo) % step == 0 for lo, hi, step in self.ranges
        )

    def __len__(self) -> int:
        return sum((hi - lo) // step + 1 for lo, hi, step in self.ranges if hi >= lo)


@dataclass
class Snapshot:
    """One ``squeue --json -t all`` answer, indexed by external id."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, tuple[TaskSet, dict[str, Any]]] = field(default_factory=dict)

    def find(self, external_id: str) -> dict[str, Any] | None:
        """The record that describes ``external_id`` (a pending array task: its array's)."""
        record = self.records.get(external_id)
        if record is not None:
            return record
        match = _ARRAY_ID.match(external_id)
        if match and match.group(1) in self.pending:
            tasks, array = self.pending[match.group(1)]
            if int(match.group(2)) in tasks:
                return array
        return None

    def active_jobs(self, user: str) -> int:
        """Pending and running jobs of ``user``, counting each array task (MaxSubmitJobs)."""
        count = 0
        for record in self.records.values():
            if record.get("user_name") == user and not slurm_state(record)[0].terminal:
                count += 1
        for tasks, record in self.pending.values():
            if record.get("user_name") == user and not slurm_state(record)[0].terminal:
                count += len(tasks)
        return count


def parse_squeue(text: str) -> Snapshot:
    """Index the ``jobs`` of an ``squeue --json`` answer."""
    snapshot = Snapshot()
    for record in json.loads(text).get("jobs", []):
        array_id = _number(record.get("array_job_id"))
        task_id = _number(record.get("array_task_id"))
        if not array_id:
            snapshot.records[str(record["job_id"])] = record
        elif task_id is not None:
            snapshot.records[f"{array_id}_{task_id}"] = record
        elif record.get("array_task_string"):
            snapshot.pending[str(array_id)] = (TaskSet.parse(record["array_task_string"]), record)
    return snapshot


def slurm_state(record: Mapping[str, Any]) -> tuple[BackendState, str]:
    """Our state and Slurm's base state name for a record (unknown names count as FAILED)."""
    raw = record.get("job_state")
    name = str(raw[0] if isinstance(raw, list) and raw else raw or "UNKNOWN").upper()
    return STATE_TABLE.get(name, (_S.FAILED, None))[0], name


def record_status(
    external_id: str, record: Mapping[str, Any], *, cancelled_here: bool = False
) -> TaskStatus:
    """Translate one ``squeue --json`` record into our terms, keeping Slurm's reason."""
    state, name = slurm_state(record)
    words = STATE_TABLE.get(name, (_S.FAILED, f"unknown Slurm state {name}"))[1]
    code, sig = decode_exit(record.get("exit_code"))
    reason = str(record.get("state_reason") or "None")
    message: str | None = words
    if state is _S.PENDING:
        restarts = _number(record.get("restart_cnt")) or 0
        detail = reason if reason != "None" else None
        parts = [words, f"restarted {restarts} time(s)" if restarts else None, detail]
        message = "; ".join(p for p in parts if p) or None
    elif state is _S.FAILED and words is None:
        message = exit_words(code, sig)
    elif state is _S.CANCELLED and words is None:
        message = cancel_words(cancelled_here, None)
    elif state is _S.TIMEOUT and words is None:
        limit = _number(record.get("time_limit"))
        message = f"exceeded its time limit ({limit} min)" if limit else "exceeded its time limit"
    elif state is _S.NODE_FAIL and words is None:
        message = f"node {record.get('nodes') or '?'} failed while running it"
    exit_code = code if state.terminal and state is not _S.CANCELLED else None
    return TaskStatus(
        external_id=external_id,
        state=state,
        exit_code=exit_code if sig == 0 else None,
        message=message,
        started=_time(record.get("start_time")) if state is not _S.PENDING else None,
        finished=_time(record.get("end_time")) if state.terminal else None,
    )


def decode_exit(raw: Any) -> tuple[int, int]:
    """(exit code, signal) from a wait status (22.05) or an exit-code object (23.02+)."""
    if isinstance(raw, dict):
        code = _number(raw.get("return_code")) or 0
        sig_info = raw.get("signal") or {}
        sig = _number(sig_info.get("id") if isinstance(sig_info, dict) else sig_info) or 0
        return code, sig
    value = _number(raw) or 0
    return (value >> 8) & 0xFF, value & 0x7F


def exit_words(code: int, sig: int) -> str:
    if sig:
        try:
            sig_name = signal.Signals(sig).name
        except ValueError:
            sig_name = f"signal {sig}"
        return f"killed by {sig_name}"
    return f"exited with status {code}"


def cancel_words(cancelled_here: bool, by: str | None) -> str:
    if cancelled_here:
        return "cancelled through gearbroker"
    if by:
        return f"cancelled by {by}"
    return "cancelled outside gearbroker (scancel by a user or an administrator)"


def parse_sacct(text: str, *, cancelled: frozenset[str] = frozenset()) -> dict[str, TaskStatus]:
    """Statuses from ``sacct -X -n -P --format=JobID,State,ExitCode,Start,End,NodeList``."""
    statuses = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 6 or "[" in parts[0]:
            continue
        job_id, state_text, exit_text, start, end, nodes = parts[:6]
        name, _, by = state_text.partition(" by ")
        record: dict[str, Any] = {"job_state": name.strip(), "nodes": nodes}
        code, _, sig = exit_text.partition(":")
        record["exit_code"] = (int(code or 0) << 8) | int(sig or 0)
        status = record_status(job_id, record, cancelled_here=job_id in cancelled)
        if status.state is _S.CANCELLED and by and job_id not in cancelled:
            status = _replace_message(status, cancel_words(False, f"uid {by.strip()}"))
        statuses[job_id] = TaskStatus(
            external_id=status.external_id,
            state=status.state,
            exit_code=status.exit_code,
            message=status.message,
            started=_iso(start),
            finished=_iso(end) if status.state.terminal else None,
        )
    return statuses


def _replace_message(status: TaskStatus, message: str) -> TaskStatus:
    return TaskStatus(status.external_id, status.state, status.exit_code, message)


def _number(value: Any) -> int | None:
    """An int from a plain number or a 23.02+ ``{"set": .., "number": ..}`` object."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _time(value: Any) -> datetime | None:
    seconds = _number(value)
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


def _iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.strip()).astimezone(UTC)  # sacct prints local time
    except ValueError:
        return None
