"""The state table: Job and pod objects as the API server sends them -> our states."""

from __future__ import annotations

from typing import Any

import pytest

from backends.base import BackendState
from backends.kubernetes.states import JobRecord, PodInfo, final_status, latest_pods, pending_reason

S = BackendState


def job(status: dict[str, Any], name: str = "gb-job-1-1-00000000") -> dict[str, Any]:
    meta = {
        "name": name,
        "creationTimestamp": "2024-05-01T10:00:00Z",
        "annotations": {
            "gearbroker.io/job-dir": "/pvc/jobs/1-1",
            "gearbroker.io/log-limit-bytes": "99",
        },
    }
    return {"metadata": meta, "status": status}


def failed(reason: str, message: str = "") -> dict[str, Any]:
    cond = {"type": "Failed", "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": "2024-05-01T10:05:00Z"}  # fmt: skip
    return job({"failed": 1, "startTime": "2024-05-01T10:00:01Z", "conditions": [cond]})


def pod(state: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "gb-job-1-1-00000000-abcde", "creationTimestamp": "2024-05-01T10:00:02Z",
                     "ownerReferences": [{"kind": "Job", "name": "gb-job-1-1-00000000"}]},
        "status": {"containerStatuses": [{"name": "gear", "state": state}], **status},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ({}, S.PENDING),
        ({"active": 1, "ready": 0}, S.PENDING),
        ({"active": 1, "ready": 1}, S.RUNNING),
        ({"active": 0, "failed": 1}, S.RUNNING),  # pod ended, condition not yet written
        ({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}, S.COMPLETED),
        ({"conditions": [{"type": "Complete", "status": "False"}], "active": 1}, S.PENDING),
    ],
)
def test_job_alone(status: dict[str, Any], state: BackendState) -> None:
    assert JobRecord.from_object(job(status)).state is state


def test_record_keeps_annotations_and_times() -> None:
    record = JobRecord.from_object(failed("BackoffLimitExceeded"))
    assert (record.job_dir, record.log_limit) == ("/pvc/jobs/1-1", 99)
    assert record.started is not None and record.finished is not None
    assert record.finished > record.started


def test_complete_is_exit_zero() -> None:
    obj = job({"succeeded": 1, "completionTime": "2024-05-01T10:01:00Z",
               "conditions": [{"type": "Complete", "status": "True"}]})  # fmt: skip
    status = final_status("x", JobRecord.from_object(obj), None)
    assert (status.state, status.exit_code, status.message) == (S.COMPLETED, 0, None)
    assert status.finished is not None


def test_deadline_is_timeout() -> None:
    status = final_status("x", JobRecord.from_object(failed("DeadlineExceeded", "too long")), None)
    assert status.state is S.TIMEOUT
    assert "walltime" in (status.message or "") and "too long" in (status.message or "")


def test_oom_killed_pod_is_out_of_memory() -> None:
    info = PodInfo.from_object(pod({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))
    status = final_status("x", JobRecord.from_object(failed("BackoffLimitExceeded")), info)
    assert (status.state, status.exit_code) == (S.OUT_OF_MEMORY, 137)


def test_exit_code_comes_from_the_pod() -> None:
    info = PodInfo.from_object(pod({"terminated": {"exitCode": 3, "reason": "Error"}}))
    status = final_status("x", JobRecord.from_object(failed("BackoffLimitExceeded")), info)
    assert (status.state, status.exit_code, status.message) == (S.FAILED, 3, "exited with status 3")


def test_evicted_or_disrupted_pod_is_node_fail() -> None:
    evicted = PodInfo.from_object(pod({}, phase="Failed", reason="Evicted", message="low on disk"))
    record = JobRecord.from_object(failed("BackoffLimitExceeded"))
    assert final_status("x", record, evicted).state is S.NODE_FAIL
    cond = {"type": "DisruptionTarget", "status": "True", "message": "preempted"}
    disrupted = PodInfo.from_object(pod({"terminated": {"exitCode": 143}}, conditions=[cond]))
    status = final_status("x", record, disrupted)
    assert status.state is S.NODE_FAIL and "preempted" in (status.message or "")


def test_failed_job_without_pod_keeps_the_job_reason() -> None:
    record = JobRecord.from_object(failed("PodFailurePolicy", "container gear exited 42"))
    status = final_status("x", record, None, deleted=True)
    assert status.state is S.FAILED
    assert "exited 42" in (status.message or "") and "deleted" in (status.message or "")


def test_pending_reasons_quote_the_cluster() -> None:
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory."}  # fmt: skip
    unsched = PodInfo.from_object(pod({}, phase="Pending", conditions=[cond]))
    assert (
        pending_reason(unsched) == "unschedulable: 0/3 nodes are available: 3 Insufficient memory."
    )
    pull = PodInfo.from_object(pod({"waiting": {"reason": "ErrImagePull", "message": "not found"}}))
    assert pending_reason(pull) == "ErrImagePull: not found"
    assert pending_reason(None) is None


def test_latest_pod_per_job() -> None:
    older = pod({"terminated": {"exitCode": 1}})
    newer = pod({"terminated": {"exitCode": 2}})
    newer["metadata"]["creationTimestamp"] = "2024-05-01T11:00:00Z"
    labelled = {"metadata": {"name": "p", "labels": {"job-name": "other"}}, "status": {}}
    pods = latest_pods([newer, older, labelled, {"metadata": {"name": "orphan"}}])
    assert pods["gb-job-1-1-00000000"].exit_code == 2
    assert set(pods) == {"gb-job-1-1-00000000", "other"}
