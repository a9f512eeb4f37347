"""Gang restarts: after a rank of a multi-worker training failed, whether all workers
start again as a new attempt or the training fails."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlcycle.api.v1alpha1.trainingjob import TrainingJob
from mlcycle.plan import reasons
from mlcycle.plan.conditions import cap_message
from mlcycle.plan.trainingjob.job import backoff_limit
from mlcycle.plan.trainingjob.manifests import true_condition
from mlcycle.plan.trainingjob.names import attempt_of_job
from mlcycle.plan.trainingjob.pods import (
    PodFailure,
    current_attempt_pods,
    job_failed_condition,
    latest_pod_failure,
)


@dataclass(frozen=True)
class GangRestart:
    """What to do after a rank of a multi-worker training failed.

    `restart` False means the retry budget (backoffLimit, 6 when unset) is spent and the
    training fails with BackoffLimitExceeded.
    """

    restart: bool
    next_attempt: int
    failure: PodFailure | None
    message: str


def gang_restart(
    tj: TrainingJob, job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> GangRestart | None:
    """The decision after a rank failed, or None when no rank failed (or one worker).

    The Job of a gang has backoffLimit 0, so the Job controller marks it Failed with
    BackoffLimitExceeded right after the first rank fails; that is the normal trigger.
    A failed pod seen before the Job caught up triggers the same decision. Permanent exit
    codes (the Job fails with PodFailurePolicy) and the deadline are never retried.
    """
    if tj.spec.workers == 1 or job is None or true_condition(job, "Complete"):
        return None
    failed_condition = job_failed_condition(job)
    if failed_condition is not None and (
        failed_condition.get("reason") != reasons.BACKOFF_LIMIT_EXCEEDED
    ):
        return None
    failure = latest_pod_failure(current_attempt_pods(job, pods))
    if failure is None and failed_condition is None:
        return None
    permanent = tj.spec.failure_policy.permanent_exit_codes if tj.spec.failure_policy else []
    if failure is not None and failure.exit_code in permanent:
        return None
    attempt = attempt_of_job(job)
    limit = backoff_limit(tj)
    what = failure.message if failure is not None else "a rank failed"
    if failure is not None and failure.rank is not None:
        what = f"rank {failure.rank} failed: {what}"
    if attempt >= limit:
        message = f"{what}; no gang restarts left (backoffLimit {limit})"
        return GangRestart(False, attempt, failure, cap_message(message))
    message = f"{what}; restarting all {tj.spec.workers} workers (restart {attempt + 1} of {limit})"
    return GangRestart(True, attempt + 1, failure, cap_message(message))


def gang_restart_needed(
    tj: TrainingJob, job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> bool:
    decision = gang_restart(tj, job, pods)
    return decision is not None and decision.restart
