"""Job and pod objects (plain JSON dicts) -> our states: the state table and its reasons.

A Job alone says PENDING (``active`` pods, none ``ready``), RUNNING (a ready pod),
COMPLETED (condition ``Complete``), TIMEOUT (``Failed``/``DeadlineExceeded``: the
walltime) or FAILED (``Failed``/``BackoffLimitExceeded`` ...).  The pod refines a failure:
``OOMKilled`` is OUT_OF_MEMORY, an eviction or disruption is NODE_FAIL, otherwise the exit
code is reported.  A pod that never starts is explained by :func:`pending_reason`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backends.base import BackendState, TaskStatus
from backends.kubernetes.manifest import (
    ANNOTATION_JOB_DIR,
    ANNOTATION_LOG_LIMIT,
    ANNOTATION_OUTPUT_PATH,
    CONTAINER,
)

_S = BackendState
#: Job ``Failed`` condition reason -> (our state, words for users).
FAILED_REASONS: Mapping[str, tuple[BackendState, str]] = {
    "DeadlineExceeded": (_S.TIMEOUT, "exceeded its walltime (activeDeadlineSeconds)"),
    "BackoffLimitExceeded": (_S.FAILED, "its pod failed"),
    "PodFailurePolicy": (_S.FAILED, "its pod failed (pod failure policy)"),
    "FailedIndexes": (_S.FAILED, "its pod failed"),
}
#: Container ``waiting`` reasons that mean the pod will not start by itself.
STUCK_REASONS = frozenset(
    {
        "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
        "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
    }
)  # fmt: skip
#: Pod ``status.reason`` values that mean the node, not the gear, ended the run.
NODE_REASONS = frozenset({"Evicted", "NodeLost", "Shutdown", "NodeShutdown", "Terminated"})


@dataclass(frozen=True)
class JobRecord:
    """What the backend keeps of one Job object."""

    name: str
    job_dir: str | None
    log_limit: int | None
    output_path: str | None  # S3 staging: the output folder relative to job_dir
    created: datetime | None
    started: datetime | None
    finished: datetime | None
    active: int
    ready: int
    succeeded: int
    failed: int
    condition: str | None  # "Complete" or "Failed" once the Job is finished
    reason: str | None
    message: str | None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> JobRecord:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        annotations = meta.get("annotations") or {}
        condition = reason = message = None
        finished = _time(status.get("completionTime"))
        for cond in status.get("conditions") or ():
            if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
                condition, reason, message = cond["type"], cond.get("reason"), cond.get("message")
                finished = finished or _time(cond.get("lastTransitionTime"))
        limit = annotations.get(ANNOTATION_LOG_LIMIT)
        return cls(
            name=str(meta.get("name")),
            job_dir=annotations.get(ANNOTATION_JOB_DIR),
            log_limit=int(limit) if isinstance(limit, str) and limit.isdigit() else None,
            output_path=annotations.get(ANNOTATION_OUTPUT_PATH),
            created=_time(meta.get("creationTimestamp")),
            started=_time(status.get("startTime")),
            finished=finished,
            active=int(status.get("active") or 0),
            ready=int(status.get("ready") or 0),
            succeeded=int(status.get("succeeded") or 0),
            failed=int(status.get("failed") or 0),
            condition=condition,
            reason=reason,
            message=message,
        )

    @property
    def state(self) -> BackendState:
        """The state the Job object alone shows (FAILED may be refined by its pod)."""
        if self.condition == "Complete":
            return _S.COMPLETED
        if self.condition == "Failed":
            return FAILED_REASONS.get(self.reason or "", (_S.FAILED, ""))[0]
        if self.ready or self.succeeded or self.failed:
            return _S.RUNNING  # a ready pod, or one that ended and awaits its condition
        return _S.PENDING


@dataclass(frozen=True)
class PodInfo:
    """The facts of a Job's pod that matter for its outcome."""

    name: str
    phase: str
    reason: str | None
    message: str | None
    exit_code: int | None
    terminated_reason: str | None
    waiting_reason: str | None
    waiting_message: str | None
    unschedulable: str | None
    disrupted: str | None
    init_failure: str | None = None  # an init container that ended with a non-zero status

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> PodInfo:
        status = obj.get("status") or {}
        exit_code = terminated = waiting = waiting_message = None
        for cs in status.get("containerStatuses") or ():
            if cs.get("name") != CONTAINER:
                continue
            state = cs.get("state") or {}
            if "terminated" in state:
                exit_code = state["terminated"].get("exitCode")
                terminated = state["terminated"].get("reason")
            if "waiting" in state:
                waiting = state["waiting"].get("reason")
                waiting_message = state["waiting"].get("message")
        init_failure = None
        for cs in status.get("initContainerStatuses") or ():
            code = ((cs.get("state") or {}).get("terminated") or {}).get("exitCode")
            if code:
                init_failure = f"init container {cs.get('name')} exited with status {code}"
        unschedulable = disrupted = None
        for cond in status.get("conditions") or ():
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                unschedulable = cond.get("message") or cond.get("reason") or "not scheduled"
            if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
                disrupted = cond.get("message") or cond.get("reason") or "disrupted"
        return cls(
            name=str((obj.get("metadata") or {}).get("name")),
            phase=str(status.get("phase") or "Pending"),
            reason=status.get("reason"),
            message=status.get("message"),
            exit_code=exit_code,
            terminated_reason=terminated,
            waiting_reason=waiting,
            waiting_message=waiting_message,
            unschedulable=unschedulable,
            disrupted=disrupted,
            init_failure=init_failure,
        )


def owner_job(pod: Mapping[str, Any]) -> str | None:
    """The name of the Job that owns ``pod`` (owner reference, else the controller's label)."""
    meta = pod.get("metadata") or {}
    for ref in meta.get("ownerReferences") or ():
        if ref.get("kind") == "Job":
            return str(ref.get("name"))
    labels = meta.get("labels") or {}
    name = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    return str(name) if name else None


def latest_pods(pods: Sequence[Mapping[str, Any]]) -> dict[str, PodInfo]:
    """Job name -> its newest pod."""
    newest: dict[str, tuple[str, PodInfo]] = {}
    for pod in pods:
        job = owner_job(pod)
        if job is None:
            continue
        created = str((pod.get("metadata") or {}).get("creationTimestamp") or "")
        if job not in newest or created >= newest[job][0]:
            newest[job] = (created, PodInfo.from_object(pod))
    return {job: info for job, (_, info) in newest.items()}


def pending_reason(pod: PodInfo | None) -> str | None:
    """Why a pod is not running yet, in the scheduler's or kubelet's words (None: no reason)."""
    if pod is None:
        return None
    if pod.unschedulable:
        return f"unschedulable: {pod.unschedulable}"
    if pod.waiting_reason:
        detail = f": {pod.waiting_message}" if pod.waiting_message else ""
        return f"{pod.waiting_reason}{detail}"
    return None


def final_status(
    external_id: str, record: JobRecord, pod: PodInfo | None, *, deleted: bool = False
) -> TaskStatus:
    """The terminal status of a finished Job, refined by its pod when known."""
    state = record.state
    exit_code = pod.exit_code if pod is not None else None
    message: str | None = None
    if state is _S.COMPLETED:
        exit_code = 0 if exit_code is None else exit_code
    elif state is _S.TIMEOUT:
        message = FAILED_REASONS["DeadlineExceeded"][1]
        if record.message:
            message += f": {record.message}"
    else:
        state, message = _failure(record, pod)
    if deleted and state is _S.FAILED and pod is None:
        message = f"{message} (the Job was deleted before its pod could be read)"
    return TaskStatus(
        external_id=external_id,
        state=state,
        exit_code=exit_code,
        message=message,
        started=record.started,
        finished=record.finished,
    )


def _failure(record: JobRecord, pod: PodInfo | None) -> tuple[BackendState, str]:
    job_words = FAILED_REASONS.get(record.reason or "", (_S.FAILED, None))[1] or (
        f"the Job failed ({record.reason or 'no reason given'})"
    )
    if record.message:
        job_words += f": {record.message}"
    if pod is None:
        return _S.FAILED, job_words
    if pod.terminated_reason == "OOMKilled":
        return _S.OUT_OF_MEMORY, "killed for exceeding its memory limit (OOMKilled)"
    if pod.disrupted or pod.reason in NODE_REASONS:
        why = pod.disrupted or f"{pod.reason}: {pod.message or 'no details'}"
        return _S.NODE_FAIL, f"its pod {pod.name} was ended by the cluster: {why}"
    if pod.exit_code is not None:
        return _S.FAILED, f"exited with status {pod.exit_code}"
    if pod.init_failure:
        return _S.FAILED, f"staging failed: {pod.init_failure}"
    stuck = pending_reason(pod)
    return _S.FAILED, f"{job_words}; pod {pod.name}: {stuck}" if stuck else job_words


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
