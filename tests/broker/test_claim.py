"""Claim order: priority, then users in turn; per-user/project limits; retry backoff."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from broker.claim import ClaimLimits, claim_jobs
from broker.jobs import JobRequest, create_job
from catalog.catalog import Catalog
from catalog.models import Job, utcnow


def _pending(cat: Catalog, ref: str, path: str, users: list[str], **request: object) -> list[int]:
    ids = []
    for user in users:
        owner = Catalog(cat.db, cat.blobs, user)
        ids.append(create_job(owner, JobRequest(ref, {"infile": path}, **request)).id)  # type: ignore[arg-type]
    return ids


def _claim(cat: Catalog, limits: ClaimLimits) -> list[int]:
    with cat.db.session() as session:
        return claim_jobs(session, "test", ("local",), limits)[0]


def test_users_take_turns_within_a_priority(
    catalog: Catalog, install_test_gear: Callable[..., str], sample_file: str
) -> None:
    ref = install_test_gear()
    for user in ("alice", "bob", "carol"):
        catalog.add_permission("lab/study", user, "rw")
    big = _pending(catalog, ref, sample_file, ["alice"] * 10)
    bob = _pending(catalog, ref, sample_file, ["bob"])
    urgent = _pending(catalog, ref, sample_file, ["carol"], priority="critical")
    first = _claim(catalog, ClaimLimits(in_flight=3))
    assert first == [urgent[0], big[0], bob[0]]
    # alice already has one in flight: with room for two more, she gets both
    assert _claim(catalog, ClaimLimits(in_flight=5)) == big[1:3]


def test_limits_and_backoff(
    catalog: Catalog, install_test_gear: Callable[..., str], sample_file: str
) -> None:
    ref = install_test_gear()
    catalog.add_permission("lab/study", "alice", "rw")
    alice = _pending(catalog, ref, sample_file, ["alice"] * 3)
    admin = _pending(catalog, ref, sample_file, ["admin"])
    with catalog.db.session() as session:
        later = session.get(Job, admin[0])
        assert later is not None
        later.not_before = utcnow() + timedelta(hours=1)
    assert _claim(catalog, ClaimLimits(in_flight=10, per_user=2)) == alice[:2]
    assert _claim(catalog, ClaimLimits(in_flight=10, per_user=2)) == []  # alice at her limit,
    assert _claim(catalog, ClaimLimits(in_flight=10, per_project=2)) == []  # project full too
    with catalog.db.session() as session:
        row = session.get(Job, admin[0])
        assert row is not None
        row.not_before = utcnow() - timedelta(seconds=1)
    assert _claim(catalog, ClaimLimits(in_flight=10, per_user=2, per_project=3)) == admin
