"""Slurm records to our states, and the backend's polling logic against a scripted transport."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from backends.base import BackendState
from backends.slurm import SlurmBackend, SlurmSiteConfig, SlurmSubmitError
from backends.slurm.script import ScriptError
from backends.slurm.states import (
    TaskSet,
    decode_exit,
    parse_sacct,
    parse_squeue,
    record_status,
)
from broker.commands import DEFAULT_TIMEOUT_S, CommandError, CommandResult
from broker.task import Resources
from broker.transport import Transport
from tests.backends.slurm_helpers import FakeRuntime, make_task

S = BackendState


def job(job_id: int, state: str | list[str], **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "job_id": job_id,
        "array_job_id": 0,
        "array_task_id": None,
        "array_task_string": "",
        "job_state": state,
        "state_reason": "None",
        "exit_code": 0,
        "start_time": 1_700_000_000,
        "end_time": 1_700_000_060,
        "time_limit": 1,
        "nodes": "node7",
        "user_name": "alice",
    }
    record.update(extra)
    return record


def squeue(*records: dict[str, Any]) -> str:
    return json.dumps({"meta": {}, "errors": [], "jobs": list(records)})


class ScriptedTransport(Transport):
    """Answers commands from ``replies`` (by command name) and records every argv."""

    def __init__(self, replies: Mapping[str, list[CommandResult | str]]) -> None:
        self.replies = {k: list(v) for k, v in replies.items()}
        self.calls: list[tuple[str, ...]] = []
        self.inputs: list[str | None] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> CommandResult:
        self.calls.append(tuple(argv))
        self.inputs.append(input)
        queue = self.replies[Path(argv[0]).name]
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        result = (
            reply if isinstance(reply, CommandResult) else CommandResult(tuple(argv), 0, reply, "")
        )
        if check and result.returncode != 0:
            raise CommandError(argv, result.returncode, result.stdout, result.stderr)
        return result

    def count(self, name: str) -> int:
        return sum(1 for call in self.calls if Path(call[0]).name == name)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def backend_with(
    replies: Mapping[str, list[CommandResult | str]], **site: Any
) -> tuple[SlurmBackend, ScriptedTransport, Clock]:
    transport = ScriptedTransport(replies)
    clock = Clock()
    config = SlurmSiteConfig.from_mapping(
        {"scratch_root": "/scratch/gb", "accounting": "no", **site}
    )
    return SlurmBackend(config, transport, clock=clock, sleep=clock.sleep), transport, clock


def test_exit_codes_decode_wait_status_and_objects() -> None:
    assert decode_exit(768) == (3, 0)
    assert decode_exit(15) == (0, 15)
    assert decode_exit(9) == (0, 9)
    assert decode_exit(None) == (0, 0)
    assert decode_exit({"status": ["EXITED"], "return_code": {"set": True, "number": 4}}) == (4, 0)
    signaled = {
        "return_code": {"set": True, "number": 0},
        "signal": {"id": {"set": True, "number": 9}},
    }
    assert decode_exit(signaled) == (0, 9)


def test_task_sets() -> None:
    tasks = TaskSet.parse("2,4-9:2,11-12%5")
    assert [i for i in range(14) if i in tasks] == [2, 4, 6, 8, 11, 12]
    assert len(tasks) == 6
    assert "3" not in tasks


@pytest.mark.parametrize(
    ("record", "state", "code", "words"),
    [
        (job(1, "COMPLETED"), S.COMPLETED, 0, None),
        (job(1, "FAILED", exit_code=768), S.FAILED, 3, "exited with status 3"),
        (job(1, "FAILED", exit_code=9), S.FAILED, None, "killed by SIGKILL"),
        (job(1, "TIMEOUT", exit_code=15), S.TIMEOUT, None, "exceeded its time limit (1 min)"),
        (job(1, "OUT_OF_MEMORY", exit_code=32512), S.OUT_OF_MEMORY, 127, "more memory"),
        (job(1, "NODE_FAIL"), S.NODE_FAIL, 0, "node node7 failed"),
        (job(1, "BOOT_FAIL"), S.NODE_FAIL, 0, "failed to boot"),
        (job(1, "PREEMPTED"), S.NODE_FAIL, 0, "preempted"),
        (job(1, "CANCELLED", exit_code=15), S.CANCELLED, None, "outside gearbroker"),
        (job(1, "DEADLINE"), S.TIMEOUT, 0, "deadline"),
        (job(1, "PENDING", state_reason="Resources"), S.PENDING, None, "Resources"),
        (
            job(1, "PENDING", restart_cnt=1, state_reason="BeginTime"),
            S.PENDING,
            None,
            "restarted 1",
        ),
        (job(1, "REQUEUED"), S.PENDING, None, "requeued"),
        (job(1, "RUNNING"), S.RUNNING, None, None),
        (job(1, "SUSPENDED"), S.RUNNING, None, "suspended"),
        (job(1, ["RUNNING", "COMPLETING"]), S.RUNNING, None, None),
        (job(1, "WEIRD_NEW"), S.FAILED, 0, "unknown Slurm state WEIRD_NEW"),
    ],
)
def test_state_table(record: dict[str, Any], state: S, code: int | None, words: str | None) -> None:
    status = record_status("1", record)
    assert status.state is state
    assert status.exit_code == code
    if words is None:
        assert status.message is None
    else:
        assert status.message is not None and words in status.message
    assert (status.finished is not None) == state.terminal
    assert (status.started is None) == (state is S.PENDING)


def test_cancelled_here_is_said() -> None:
    status = record_status("1", job(1, "CANCELLED"), cancelled_here=True)
    assert status.message == "cancelled through gearbroker"


def test_squeue_index_finds_array_tasks_and_pending_ranges() -> None:
    snapshot = parse_squeue(
        squeue(
            job(5, "COMPLETED"),
            job(11, "RUNNING", array_job_id=10, array_task_id=0),
            job(10, "PENDING", array_job_id=10, array_task_string="1-3,5%2", user_name="bob"),
        )
    )
    assert snapshot.find("5") is not None
    assert snapshot.find("10_0")["job_state"] == "RUNNING"  # type: ignore[index]
    assert snapshot.find("10_2")["job_state"] == "PENDING"  # type: ignore[index]
    assert snapshot.find("10_4") is None
    assert snapshot.find("10") is None
    assert snapshot.active_jobs("bob") == 4
    assert snapshot.active_jobs("alice") == 1


def test_sacct_lines() -> None:
    text = (
        "7|CANCELLED by 1000|0:15|2024-05-01T10:00:00|2024-05-01T10:01:00|node1\n"
        "8_3|FAILED|2:0|2024-05-01T10:00:00|2024-05-01T10:00:05|node1\n"
        "8_[4-9%2]|PENDING|0:0|Unknown|Unknown|None assigned\n"
        "9|COMPLETED|0:0|2024-05-01T10:00:00|2024-05-01T10:00:01|node2\n"
    )
    statuses = parse_sacct(text)
    assert statuses["7"].state is S.CANCELLED and statuses["7"].message == "cancelled by uid 1000"
    assert (statuses["8_3"].state, statuses["8_3"].exit_code) == (S.FAILED, 2)
    assert statuses["9"].state is S.COMPLETED and statuses["9"].finished is not None
    assert "8_[4-9%2]" not in statuses


def test_one_squeue_call_serves_many_ids_and_is_rate_limited() -> None:
    answer = squeue(job(1, "RUNNING"), job(2, "COMPLETED"), job(3, "FAILED", exit_code=256))
    backend, transport, clock = backend_with({"squeue": [answer]}, status_min_interval_s=5)
    statuses = backend.status(["1", "2", "3"])
    assert [s.state for s in statuses] == [S.RUNNING, S.COMPLETED, S.FAILED]
    backend.status(["1", "2", "3"])
    assert transport.count("squeue") == 1
    assert transport.calls[0] == ("squeue", "--json", "-t", "all")
    clock.now += 5
    backend.status(["1"])
    assert transport.count("squeue") == 2


def test_missing_job_is_looked_up_again_then_reported_missing() -> None:
    backend, transport, _ = backend_with({"squeue": [squeue(job(1, "RUNNING"))]})
    one, gone = backend.status(["1", "99"])
    assert one.state is S.RUNNING
    assert gone.state is S.MISSING and gone.message and "no longer knows job 99" in gone.message
    assert transport.count("squeue") == 2


def test_second_look_finds_a_job_the_first_missed() -> None:
    replies: list[CommandResult | str] = [squeue(), squeue(job(4, "PENDING"))]
    backend, transport, _ = backend_with({"squeue": replies})
    assert backend.status(["4"])[0].state is S.PENDING
    assert transport.count("squeue") == 2


def test_sacct_is_consulted_when_accounting_is_available() -> None:
    sacct = "42|TIMEOUT|0:15|2024-05-01T10:00:00|2024-05-01T11:00:00|n1\n"
    backend, transport, _ = backend_with({"squeue": [squeue()], "sacct": [sacct]}, accounting="yes")
    (status,) = backend.status(["42"])
    assert status.state is S.TIMEOUT
    assert transport.calls[-1][-2:] == ("-j", "42")


def test_accounting_auto_reads_the_controller_config() -> None:
    config = "AccountingStorageType   = accounting_storage/none\n"
    backend, transport, _ = backend_with(
        {"squeue": [squeue()], "scontrol": [config]}, accounting="auto"
    )
    assert backend.status(["42"])[0].state is S.MISSING
    backend.status(["43"])
    assert transport.count("scontrol") == 1 and transport.count("sacct") == 0


def test_cancel_is_one_scancel_and_reports_refusals() -> None:
    refused = CommandResult(
        ("scancel",),
        1,
        "",
        "scancel: error: Kill job error on job id 8_2: Invalid job id specified\n",
    )
    backend, transport, _ = backend_with({"scancel": [refused], "squeue": [squeue()]})
    assert backend.cancel(["7", "8_2", "9"]) == [True, False, True]
    assert transport.calls == [("scancel", "7", "8_2", "9")]
    statuses = backend.status(["7", "8_2", "9_4"])
    assert [s.state for s in statuses] == [S.CANCELLED, S.MISSING, S.CANCELLED]


def test_cancel_raises_when_scancel_itself_fails() -> None:
    broken = CommandResult(("scancel",), 1, "", "scancel: error: slurm_receive_msg: Zero Bytes")
    backend, _, _ = backend_with({"scancel": [broken]})
    with pytest.raises(CommandError, match="Zero Bytes"):
        backend.cancel(["1"])


def test_submit_many_chunks_arrays_and_keeps_order(tmp_path: Path) -> None:
    backend, transport, _ = backend_with(
        {"sbatch": ["100\n", "200;cluster\n", "300\n"], "mkdir": [""]}, max_array_size=2
    )
    tasks = [make_task(tmp_path, i, "true") for i in range(5)]
    ids = backend.submit_many(tasks, FakeRuntime())
    assert ids == ["100_0", "100_1", "200_0", "200_1", "300"]
    scripts = [i for i in transport.inputs if i]
    assert "--array=0-1%50" in scripts[0] and "--array" not in scripts[2]
    assert transport.count("mkdir") == 1


def test_submit_many_groups_by_resources(tmp_path: Path) -> None:
    backend, _, _ = backend_with({"sbatch": ["100", "200"], "mkdir": [""]})
    tasks = [
        make_task(tmp_path, 1, "true"),
        make_task(tmp_path, 2, "true", resources=Resources(cpus=2)),
        make_task(tmp_path, 3, "true"),
    ]
    assert backend.submit_many(tasks, FakeRuntime()) == ["100_0", "200", "100_1"]


def test_failed_chunk_cancels_the_queued_ones(tmp_path: Path) -> None:
    refused = CommandResult(("sbatch",), 1, "", "sbatch: error: QOSMaxSubmitJobPerUserLimit")
    backend, transport, _ = backend_with(
        {"sbatch": ["100", refused], "mkdir": [""], "scancel": [""]}, max_array_size=2
    )
    tasks = [make_task(tmp_path, i, "true") for i in range(4)]
    with pytest.raises(SlurmSubmitError, match="QOSMaxSubmitJobPerUserLimit"):
        backend.submit_many(tasks, FakeRuntime())
    assert transport.calls[-1] == ("scancel", "100")


def test_max_submit_jobs_waits_for_room_then_gives_up(tmp_path: Path) -> None:
    full = squeue(job(10, "PENDING", array_job_id=10, array_task_string="0-3"))
    backend, transport, clock = backend_with(
        {
            "id": ["alice\n"],
            "squeue": [full, squeue(), full],
            "sbatch": ["500"],
            "mkdir": [""],
            "scancel": [""],
        },
        max_submit_jobs=4,
        submit_wait_s=60,
        status_min_interval_s=10,
    )
    tasks = [make_task(tmp_path, i, "true") for i in range(6)]
    # Chunks of 4: the first waits one interval for the queue to drain, the second never fits.
    with pytest.raises(SlurmSubmitError, match="queue stays full"):
        backend.submit_many(tasks, FakeRuntime())
    assert clock.now >= 1060
    assert transport.count("sbatch") == 1 and transport.calls[-1] == ("scancel", "500")


def test_a_task_that_cannot_be_rendered_queues_nothing(tmp_path: Path) -> None:
    backend, transport, _ = backend_with({"sbatch": ["100"], "mkdir": [""]})
    tasks = [make_task(tmp_path, 1, "true"), make_task(tmp_path, 2, "true")]
    tasks.append(make_task(tmp_path, 3, "true", resources=Resources(cpus=float("nan"))))
    with pytest.raises(ScriptError, match="cpus"):
        backend.submit_many(tasks, FakeRuntime())
    assert transport.count("sbatch") == 0
