"""The TrainingJob's status for what was observed, with Events for the transitions; the
status that says why the training is blocked; and the status its MLflow run is closed with."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Final, Literal

from mlcycle.api.v1alpha1.trainingjob import TrainingJob, TrainingJobStatus
from mlcycle.plan import reasons
from mlcycle.plan.conditions import (
    ConditionSet,
    EventIntent,
    StatusPlan,
    cap_message,
    condition_event,
    find_condition,
    status_changed,
)
from mlcycle.plan.trainingjob.gates import GateResult
from mlcycle.plan.trainingjob.observe import TrainingObservation
from mlcycle.plan.trainingjob.run import RunBinding, mlflow_run_url

# Cleared with an explicit null (JSON merge patch) when they no longer apply.
_CLEARABLE: Final = ("completionTime", "failureReason", "failureMessage")


def _recorded(previous: TrainingJobStatus) -> dict[str, Any]:
    dumped: dict[str, Any] = previous.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def _with_cleared_fields(status: dict[str, Any], recorded: Mapping[str, Any]) -> dict[str, Any]:
    for key in _CLEARABLE:
        if key not in status and key in recorded:
            status[key] = None
    return status


def status_patch(
    tj: TrainingJob,
    *,
    previous: TrainingJobStatus | None,
    observation: TrainingObservation,
    run: RunBinding | None,
    job_name: str | None,
    metrics: Mapping[str, float],
    now: datetime.datetime,
    run_url: str | None = None,
    gates: GateResult | None = None,
    registered_model_version: str | None = None,
) -> StatusPlan:
    """The status for `observation`, and Events for what changed since `previous`.

    Events are emitted for transitions only: a new phase, a gang restart, the run bound,
    the model registered or refused. A resync that observes the same state yields
    `changed=False` and no Events.
    """
    before = previous or TrainingJobStatus()
    phase = observation.phase
    conditions = ConditionSet(before.conditions, tj.metadata.generation, now)
    if run is not None:
        conditions.put(
            reasons.TRACKING_READY,
            True,
            reasons.RUN_BOUND,
            f"MLflow run {run.run_id} in experiment {run.experiment_name}",
        )
    if find_condition(conditions.conditions, reasons.CHILDREN_APPLIED) is not None:
        # Only after a refusal: a Job accepted at once needs no word about it.
        conditions.put(reasons.CHILDREN_APPLIED, True, reasons.APPLIED, "the Job was accepted")
    conditions.put(reasons.RUNNING, phase == "Running", observation.reason, observation.message)
    if phase == "Succeeded":
        conditions.put(reasons.COMPLETE, True, observation.reason, observation.message)
    if phase == "Failed":
        conditions.put(reasons.FAILED, True, observation.reason, observation.message)
    if phase == "Suspended":
        conditions.put(reasons.SUSPENDED, True, observation.reason, observation.message)
    elif find_condition(conditions.conditions, reasons.SUSPENDED) is not None:
        conditions.put(reasons.SUSPENDED, False, reasons.RESUMED, "the Job is not suspended")
    if tj.spec.queue_name is not None:
        waiting = phase == "Suspended" or observation.reason == reasons.PENDING
        if waiting:
            conditions.put(reasons.ADMITTED, False, observation.reason, observation.message)
        else:
            admitted = f"admitted by Kueue from queue {tj.spec.queue_name}"
            conditions.put(reasons.ADMITTED, True, reasons.ADMITTED, admitted)
    if gates is not None and not gates.passed:
        refused = "; ".join(gates.failures)
        conditions.put(reasons.MODEL_REGISTERED, False, gates.reason, refused)
    elif gates is not None and registered_model_version is not None:
        registered = f"registered as ModelVersion {registered_model_version}"
        conditions.put(reasons.MODEL_REGISTERED, True, reasons.MODEL_REGISTERED, registered)

    completion_time = None
    if observation.terminal:
        completion_time = before.completion_time or observation.completion_time or now
    failed = phase == "Failed"
    status = TrainingJobStatus(
        observed_generation=tj.metadata.generation,
        phase=phase,
        conditions=conditions.conditions,
        job_name=job_name or before.job_name,
        mlflow_run_id=run.run_id if run is not None else before.mlflow_run_id,
        mlflow_experiment_id=run.experiment_id if run is not None else before.mlflow_experiment_id,
        mlflow_run_url=run_url
        or (mlflow_run_url(run) if run is not None else None)
        or before.mlflow_run_url,
        start_time=before.start_time or observation.start_time,
        completion_time=completion_time,
        attempts=max(before.attempts or 0, observation.attempts),
        metrics=dict(metrics),
        primary_metric=primary_metric(tj, metrics),
        failure_reason=observation.reason if failed else None,
        failure_message=observation.message if failed else None,
        registered_model_version=registered_model_version or before.registered_model_version,
    )
    recorded = _recorded(before)
    desired = _with_cleared_fields(_recorded(status), recorded)

    events: list[EventIntent] = []
    if phase != before.phase:
        kind = "Warning" if failed else "Normal"
        events.append(EventIntent(kind, observation.reason, cap_message(observation.message)))
    elif observation.reason == reasons.GANG_RESTARTING:
        was = find_condition(before.conditions, reasons.RUNNING)
        if was is None or was.reason != reasons.GANG_RESTARTING:
            events.append(
                EventIntent("Warning", observation.reason, cap_message(observation.message))
            )
    for type_ in (reasons.TRACKING_READY, reasons.MODEL_REGISTERED):
        event = condition_event(before.conditions, conditions.conditions, type_)
        if event is not None:
            events.append(event)
    return StatusPlan(desired, events, status_changed(recorded, desired))


def primary_metric_name(tj: TrainingJob) -> str | None:
    if tj.spec.primary_metric is not None:
        return tj.spec.primary_metric
    registration = tj.spec.registration
    if registration is not None and registration.gates:
        return registration.gates[0].metric
    return None


def primary_metric(tj: TrainingJob, metrics: Mapping[str, float]) -> str | None:
    name = primary_metric_name(tj)
    if name is None or name not in metrics:
        return None
    # Four significant digits fit a column and still tell 0.9667 from 0.9633.
    return f"{name}={metrics[name]:.4g}"


def blocked_status(
    tj: TrainingJob,
    previous: TrainingJobStatus | None,
    reason: str,
    message: str,
    now: datetime.datetime,
    condition: str = reasons.TRACKING_READY,
) -> StatusPlan:
    """The training cannot proceed until MLflow is reachable (or configured), or the API
    server accepts its Job (`condition` CHILDREN_APPLIED): say so in a condition, keep the
    phase, and emit a Warning once per new reason."""
    before = previous or TrainingJobStatus()
    conditions = ConditionSet(before.conditions, tj.metadata.generation, now)
    conditions.put(condition, False, reason, message)
    status = before.model_copy(
        update={
            "observed_generation": tj.metadata.generation,
            "phase": before.phase or TrainingJob.initial_phase(),
            "conditions": conditions.conditions,
        }
    )
    recorded = _recorded(before)
    desired = {
        key: value
        for key, value in _recorded(status).items()
        if key in ("observedGeneration", "phase", "conditions")
    }
    was = find_condition(before.conditions, condition)
    events = []
    if was is None or was.status != "False" or was.reason != reason:
        events.append(EventIntent("Warning", reason, cap_message(message)))
    return StatusPlan(desired, events, status_changed(recorded, desired))


MlflowRunStatus = Literal["FINISHED", "FAILED", "KILLED"]


def mlflow_run_status(
    observation: TrainingObservation, *, deleted: bool = False
) -> MlflowRunStatus:
    """How the operator closes the run, so no run stays RUNNING after its pods are gone.

    KILLED when something outside the training stopped it: the deadline, or the
    TrainingJob deleted while it still ran (`deleted`).
    """
    if not observation.terminal:
        if deleted:
            return "KILLED"
        raise ValueError(f"the training has not ended (phase {observation.phase})")
    if observation.phase == "Succeeded":
        return "FINISHED"
    if observation.reason == reasons.DEADLINE_EXCEEDED:
        return "KILLED"
    return "FAILED"
