"""The retry policy: which failures retry, how often, after how long, with how much memory.

* Transient failures retry: node failure, lost by the backend, and exit codes the manifest's
  ``custom.gearbroker.exit-codes.transient`` lists.
* Bad input never retries (``exit-codes.bad-input``); permanent and unclassified codes,
  timeouts and cancellations do not either.
* Out of memory retries once with ``oom_memory_factor`` times the memory (up to a cap).
* ``max_retries`` comes from the job (``run --max-retries``, a rule or a batch), else the
  gear's ``custom.gearbroker.retry``, else the ``broker.max_retries`` setting; the first wait
  is ``backoff`` seconds, doubling with every attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from broker.jobs import new_attempt
from broker.lookups import gear_manifest
from broker.states import Reason
from catalog.models import Gear, Job, utcnow
from gearspec.extensions import ExitClass


@dataclass(frozen=True)
class RetrySettings:
    max_retries: int = 0
    backoff_seconds: float = 10.0
    oom_memory_factor: float = 2.0
    oom_memory_cap_mb: int = 65536


def _max_retries(job: Job, gear_default: int | None, settings: RetrySettings) -> int:
    value = job.options.get("max_retries")
    if isinstance(value, int) and value >= 0:
        return value
    return gear_default if gear_default is not None else settings.max_retries


def plan_retry(
    job: Job, gear: Gear, settings: RetrySettings
) -> tuple[str, dict[str, object]] | None:
    """(why, option changes) when ``job``'s failure deserves another attempt, else None."""
    manifest = gear_manifest(gear)
    policy = manifest.extension.retry
    if job.reason == Reason.OUT_OF_MEMORY:
        memory = (job.options.get("resources") or {}).get("memory_mb")
        if job.options.get("oom_retry") or not isinstance(memory, int):
            return None
        grown = min(settings.oom_memory_cap_mb, int(memory * settings.oom_memory_factor))
        if grown <= memory:
            return None
        return "out_of_memory", {"memory_mb": grown, "oom_retry": True}
    transient = job.reason in (Reason.NODE_FAILURE, Reason.LOST)
    if job.reason == Reason.EXIT_CODE and job.exit_code is not None:
        transient = manifest.exit_codes.classify(job.exit_code) is ExitClass.TRANSIENT
    if not transient:
        return None
    if job.attempt - 1 >= _max_retries(job, policy.max_retries, settings):
        return None
    return str(job.reason), {}


def retry_if_due(session: Session, job: Job, gear: Gear, settings: RetrySettings) -> Job | None:
    """Create the next attempt in ``session`` when the policy says so; returns it."""
    plan = plan_retry(job, gear, settings)
    if plan is None:
        return None
    why, changes = plan
    manifest_backoff = gear_manifest(gear).extension.retry.backoff_seconds
    base = job.options.get("retry_backoff")
    if not isinstance(base, int | float):
        base = manifest_backoff or settings.backoff_seconds
    nxt = new_attempt(session, job, why, **changes)
    if why != "out_of_memory":
        nxt.not_before = utcnow() + timedelta(seconds=float(base) * 2 ** (job.attempt - 1))
    return nxt
