"""The child Job and the pods of its current attempt, read as the TrainingJob's phase,
reason and message."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlcycle.api.v1alpha1.trainingjob import TrainingJob, TrainingJobPhase
from mlcycle.plan import reasons
from mlcycle.plan.conditions import cap_message
from mlcycle.plan.trainingjob.gang import gang_restart
from mlcycle.plan.trainingjob.manifests import (
    metadata_of,
    spec_of,
    status_of,
    timestamp,
    true_condition,
)
from mlcycle.plan.trainingjob.names import attempt_of_job
from mlcycle.plan.trainingjob.pods import (
    PodFailure,
    current_attempt_pods,
    job_failed_condition,
    latest_pod_failure,
    pending_problem,
    pod_name,
    pod_phase,
    pod_terminating,
)


@dataclass(frozen=True)
class TrainingObservation:
    """The child Job and its pods, read as the TrainingJob's state."""

    phase: TrainingJobPhase
    reason: str
    message: str
    terminal: bool = False
    exit_code: int | None = None
    start_time: datetime.datetime | None = None
    completion_time: datetime.datetime | None = None
    attempts: int = 0


def _attempts(tj: TrainingJob, job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> int:
    if tj.spec.workers > 1:
        return attempt_of_job(job) + 1  # a gang restart is one attempt
    status = status_of(job)
    counted = sum(int(status.get(key) or 0) for key in ("failed", "succeeded", "active"))
    # Job status lags pod events and pods may already be garbage-collected: take the larger.
    return max(counted, len(pods))


def _failure_reason(job_reason: str, failure: PodFailure | None) -> str:
    # The Job says how many tries failed; the pod says why, which is what a user acts on.
    if job_reason == reasons.DEADLINE_EXCEEDED or failure is None:
        return job_reason
    return reasons.OOM_KILLED if failure.reason == reasons.OOM_KILLED else job_reason


def observe_training(
    tj: TrainingJob,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    now: datetime.datetime,
) -> TrainingObservation:
    """Translate the Job and the pods of its attempt into phase, reason and message.

    In order: the Job's Complete or Failed condition (a failure refined by the latest
    failed pod: OOMKilled, exit code, termination message); a gang restart decision;
    a suspended Job without live pods; a pod Pending longer than startupDeadlineSeconds;
    running pods; why pods are still Pending.
    """
    if job is None:
        return TrainingObservation("Pending", reasons.PENDING, "the Job is not created yet")
    pods = current_attempt_pods(job, pods)
    attempts = _attempts(tj, job, pods)
    start_time = timestamp(status_of(job).get("startTime"))
    progress: dict[str, Any] = {"start_time": start_time, "attempts": attempts}

    complete = true_condition(job, "Complete")
    if complete is not None:
        completion_time = (
            timestamp(status_of(job).get("completionTime"))
            or timestamp(complete.get("lastTransitionTime"))
            or now
        )
        message = f"all {tj.spec.workers} workers succeeded" if tj.spec.workers > 1 else ""
        return TrainingObservation(
            "Succeeded",
            reasons.COMPLETED,
            message or "the training pod succeeded",
            terminal=True,
            completion_time=completion_time,
            **progress,
        )

    restart = gang_restart(tj, job, pods)
    if restart is not None and restart.restart:
        return TrainingObservation("Running", reasons.GANG_RESTARTING, restart.message, **progress)
    if restart is not None:
        failure = restart.failure
        return TrainingObservation(
            "Failed",
            _failure_reason(reasons.BACKOFF_LIMIT_EXCEEDED, failure),
            restart.message,
            terminal=True,
            exit_code=None if failure is None else failure.exit_code,
            completion_time=now,
            **progress,
        )

    failed = job_failed_condition(job)
    if failed is not None:
        job_reason = str(failed.get("reason") or reasons.ERROR)
        failure = latest_pod_failure(pods)
        if job_reason == reasons.DEADLINE_EXCEEDED or failure is None:
            # Pods killed at the deadline exit with SIGTERM's code, which explains nothing.
            message = str(failed.get("message") or "the Job failed")
            if job_reason == reasons.DEADLINE_EXCEEDED:
                message += f" (activeDeadlineSeconds {tj.spec.active_deadline_seconds})"
            exit_code = None
        else:
            message, exit_code = failure.message, failure.exit_code
        return TrainingObservation(
            "Failed",
            _failure_reason(job_reason, failure),
            cap_message(message),
            terminal=True,
            exit_code=exit_code,
            completion_time=timestamp(failed.get("lastTransitionTime")) or now,
            **progress,
        )

    live = [pod for pod in pods if not pod_terminating(pod) and pod_phase(pod) != "Failed"]
    running = [pod for pod in live if pod_phase(pod) == "Running"]
    if spec_of(job).get("suspend") and not any(
        pod_phase(pod) in ("Pending", "Running") for pod in live
    ):
        if tj.spec.queue_name is not None and not tj.spec.suspend:
            queue = tj.spec.queue_name
            return TrainingObservation(
                "Suspended",
                reasons.QUEUED,
                f"waiting for Kueue to admit it from {queue}",
                **progress,
            )
        return TrainingObservation(
            "Suspended", reasons.SUSPENDED, "the Job is suspended", **progress
        )

    pending = [pod for pod in live if pod_phase(pod) == "Pending"]
    deadline = tj.spec.startup_deadline_seconds
    if deadline is not None:
        for pod in pending:
            created = timestamp(metadata_of(pod).get("creationTimestamp"))
            if created is None:
                continue
            waited = (now - created).total_seconds()
            if waited > deadline:
                message = (
                    f"pod {pod_name(pod)} has been Pending for {int(waited)}s,"
                    f" longer than startupDeadlineSeconds ({deadline}s)"
                )
                problem = pending_problem(pod)
                if problem is not None:
                    message += f": {problem[0]}: {problem[1]}"
                return TrainingObservation(
                    "Failed",
                    reasons.STARTUP_DEADLINE_EXCEEDED,
                    cap_message(message),
                    terminal=True,
                    completion_time=now,
                    **progress,
                )

    finished = [pod for pod in live if pod_phase(pod) == "Succeeded"]
    if running or finished:
        # For a gang, finished ranks wait for the rest: only the Job's Complete is success.
        message = f"{len(running)} of {tj.spec.workers} workers running"
        if finished:
            message += f", {len(finished)} finished"
        return TrainingObservation("Running", reasons.RUNNING, message, **progress)
    for pod in pending:
        problem = pending_problem(pod)
        if problem is not None:
            return TrainingObservation("Pending", problem[0], cap_message(problem[1]), **progress)
    return TrainingObservation(
        "Pending", reasons.JOB_CREATED, "waiting for the training pods to start", **progress
    )
