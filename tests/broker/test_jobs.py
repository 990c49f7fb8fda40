"""Job creation and lifecycle rules (no containers involved)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select

from broker.jobs import JobRequest, cancel_job, coerce_config, create_job, get_job, retry_job
from broker.states import Reason, transition
from catalog.catalog import Catalog
from catalog.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from catalog.models import Container, Job, JobEvent, JobState
from gearspec.errors import InvocationError
from gearspec.manifest import load_manifest
from tests.fixtures.gears import gear_manifest

OpenAs = Callable[[str], Catalog]


def test_create_job_validates_and_records(
    catalog: Catalog, install_test_gear: Callable[..., str], sample_file: str
) -> None:
    ref = install_test_gear()
    job = create_job(catalog, JobRequest(ref, {"infile": sample_file}, {"message": "$(reboot)"}))
    assert job.state == JobState.PENDING
    assert job.config == {"message": "$(reboot)", "exit_code": 0, "sleep": 0, "log_mb": 0}
    assert job.inputs["infile"]["path"] == sample_file
    with catalog.db.session(readonly=True) as s:
        analysis = s.get(Container, job.destination_id)
        assert analysis is not None and analysis.level == "analysis"
        assert analysis.job_id == job.id
        parent = s.get(Container, analysis.parent_id)
        assert parent is not None and parent.label == "anat"
        events = s.scalars(select(JobEvent).where(JobEvent.job_id == job.id)).all()
        assert [(e.from_state, e.to_state) for e in events] == [(None, "pending")]


def test_every_invocation_problem_is_reported_at_once(
    catalog: Catalog, install_test_gear: Callable[..., str], sample_file: str
) -> None:
    ref = install_test_gear()
    with pytest.raises(InvocationError) as info:
        create_job(
            catalog,
            JobRequest(
                ref,
                {"infile": sample_file, "bogus": sample_file},
                {"exit_code": 999, "colour": "red"},
            ),
        )
    text = str(info.value)
    assert "$.config.exit_code" in text and "colour" in text and "bogus" in text
    with catalog.db.session(readonly=True) as s:
        assert s.scalars(select(Job)).all() == []


def test_cli_config_values_are_typed_by_the_manifest() -> None:
    manifest = load_manifest(gear_manifest())
    assert coerce_config(manifest, {"exit_code": "3", "message": "42"}) == {
        "exit_code": 3,
        "message": "42",
    }
    with pytest.raises(InvocationError, match=r"\$\.config\.sleep"):
        coerce_config(manifest, {"sleep": "soon"})


def test_bad_requests(
    catalog: Catalog, install_test_gear: Callable[..., str], sample_file: str, as_user: OpenAs
) -> None:
    ref = install_test_gear()
    with pytest.raises(NotFoundError):
        create_job(catalog, JobRequest("no-such-gear", {"infile": sample_file}))
    with pytest.raises(InvalidInputError, match="names a container"):
        create_job(catalog, JobRequest(ref, {"infile": "lab/study"}))
    with pytest.raises(InvalidInputError, match="needs --destination"):
        create_job(catalog, JobRequest(ref, {}))
    catalog.add_permission("lab/study", "reader", "ro")
    with pytest.raises(PermissionDeniedError):
        create_job(as_user("reader"), JobRequest(ref, {"infile": sample_file}))


def test_cancel_pending_and_retry(
    catalog: Catalog, install_test_gear: Callable[..., str], sample_file: str
) -> None:
    ref = install_test_gear()
    job = create_job(catalog, JobRequest(ref, {"infile": sample_file}))
    cancelled = cancel_job(catalog, job.id)
    assert cancelled.state == JobState.CANCELLED and cancelled.reason == Reason.CANCELLED
    with pytest.raises(ConflictError):
        cancel_job(catalog, job.id)
    again = retry_job(catalog, job.id)
    assert (again.attempt, again.previous_job_id, again.state) == (2, job.id, "pending")
    assert again.inputs["infile"]["file_id"] == job.inputs["infile"]["file_id"]
    assert get_job(catalog, again.id).gear.name == "test-echo"


def test_illegal_transitions_are_refused(
    catalog: Catalog, install_test_gear: Callable[..., str], sample_file: str
) -> None:
    job = create_job(catalog, JobRequest(install_test_gear(), {"infile": sample_file}))
    with catalog.db.session() as s:
        row = s.get(Job, job.id)
        assert row is not None
        transition(s, row, JobState.QUEUED)
        transition(s, row, JobState.FAILED, Reason.SUBMIT)
        with pytest.raises(ConflictError):
            transition(s, row, JobState.RUNNING)
