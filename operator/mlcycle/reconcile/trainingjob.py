"""TrainingJob: observe the MLflow run, the Job and its pods; plan; apply; write status.

Level-triggered: the TrainingJob's own events, its Job's events and a slow timer all call
`reconcile_trainingjob`, which converges to the same state however often it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from mlcycle.adapters.cluster import ClusterClient
from mlcycle.adapters.errors import AdapterError, NotFoundError, UnavailableError
from mlcycle.adapters.metrics import TrainingMetrics
from mlcycle.adapters.tracking import DatasetInput, MlflowTracking
from mlcycle.api.v1alpha1 import API_VERSION, TrainingJob
from mlcycle.api.v1alpha1.trainingjob import TrainingJobStatus
from mlcycle.plan import reasons
from mlcycle.plan import trainingjob as plan
from mlcycle.plan.conditions import StatusPlan
from mlcycle.reconcile.children import Refused, apply_children
from mlcycle.reconcile.memory import Memory, ObjectMemory
from mlcycle.reconcile.outcome import Outcome
from mlcycle.reconcile.status import with_written_status, write_status

TERMINAL_PHASES = ("Succeeded", "Failed")

# What backs off in an object's memory record: MLflow down or refusing (the 5 s resync must
# not turn an MLflow outage into a request storm from every training), and the Job the API
# server refused.
TRACKING: Final = "mlflow"
JOB: Final = "job"


class Children(Protocol):
    """The Jobs and pods of trainings as the operator's watches last saw them: reading them
    costs no API call, so a resync of every training every few seconds stays cheap."""

    def job(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def pods(self, namespace: str, job_name: str) -> Sequence[Mapping[str, Any]]: ...


@dataclass
class TrainingDeps:
    cluster: ClusterClient
    tracking_for: Callable[[str], MlflowTracking]
    default_tracking_uri: str | None
    metrics: TrainingMetrics
    mlflow_credentials_secret: str | None = None
    """Secret, in the TrainingJob's namespace, of the training pods' MLflow credentials."""
    mlflow_ui_url: str | None = None
    """The MLflow UI's external address, for `status.mlflowRunUrl`."""
    memory: Memory[None] = field(default_factory=Memory)
    jitter: Callable[[], float] = random.random


async def reconcile_trainingjob(
    tj: TrainingJob, deps: TrainingDeps, children: Children, now: datetime.datetime
) -> Outcome:
    memory = deps.memory.of(str(tj.metadata.uid))
    async with memory.lock:
        current = with_written_status(tj, memory, TrainingJobStatus)
        deps.metrics.observe_phase(str(current.metadata.uid), _phase(current))
        return await _reconcile(current, deps, memory, children, now)


def _phase(tj: TrainingJob) -> str | None:
    return tj.status.phase if tj.status is not None else None


async def _reconcile(
    tj: TrainingJob,
    deps: TrainingDeps,
    memory: ObjectMemory[None],
    children: Children,
    now: datetime.datetime,
) -> Outcome:
    namespace = str(tj.metadata.namespace)
    status = tj.status or TrainingJobStatus()
    if status.phase in TERMINAL_PHASES:
        return await _after_finish(tj, status, deps, now)
    if deps.default_tracking_uri is None:
        return await _write(
            tj,
            deps,
            memory,
            plan.blocked_status(
                tj,
                status,
                "MLflowNotConfigured",
                "the operator has no MLflow tracking URI (--mlflow-tracking-uri)",
                now,
            ),
        )
    waiting = memory.waiting(TRACKING, now)
    if waiting is not None:
        return Outcome([], retry_after=waiting.seconds_left(now))
    tracking = deps.tracking_for(deps.default_tracking_uri)
    try:
        binding = await asyncio.to_thread(
            _ensure_run,
            tj,
            status,
            tracking,
            deps.default_tracking_uri,
            deps.mlflow_credentials_secret,
        )
    except AdapterError as error:
        return await _tracking_failed(tj, status, deps, memory, error, now)

    job_name = status.job_name or plan.job_name(tj, attempt=0)
    job = children.job(namespace, job_name)
    if job is None:
        applied = await apply_children(
            deps.cluster,
            memory,
            JOB,
            _attempt_children(tj, binding, plan.attempt_of(job_name, tj)),
            now,
            deps.jitter(),
            refusal_reason=lambda _error: reasons.JOB_REFUSED,
        )
        if isinstance(applied, Refused):
            return await _job_refused(tj, status, deps, memory, applied, now)
        job = applied[-1]
        job_name = job["metadata"]["name"]
    elif bool((job.get("spec") or {}).get("suspend")) != plan.job_suspended(tj, job):
        # suspend is the one mutable field: hand it to the Job (Kueue does the same).
        desired = plan.desired_job(tj, binding, attempt=plan.attempt_of(job_name, tj))
        job = await asyncio.to_thread(deps.cluster.apply, desired)
    pods = children.pods(namespace, job_name)
    observation = plan.observe_training(tj, job, pods, now)

    restart = plan.gang_restart(tj, job, pods)
    if restart is not None and restart.restart:
        await asyncio.to_thread(deps.cluster.delete, "batch/v1", "Job", namespace, job_name)
        await asyncio.to_thread(deps.cluster.delete, "v1", "Service", namespace, job_name)
        next_job = await _apply_attempt(tj, binding, restart.next_attempt, deps)
        job_name = next_job["metadata"]["name"]
        observation = plan.observe_training(tj, None, [], now)

    metrics: dict[str, float] = dict(status.metrics)
    registered: str | None = status.registered_model_version
    gate_result = None
    if observation.terminal:
        if observation.reason == "StartupDeadlineExceeded":
            await asyncio.to_thread(deps.cluster.delete, "batch/v1", "Job", namespace, job_name)
        try:
            metrics = await asyncio.to_thread(
                tracking.finish_run, binding.run_id, plan.mlflow_run_status(observation)
            )
        except AdapterError as error:
            return await _tracking_failed(tj, status, deps, memory, error, now)
        if observation.phase == "Succeeded" and tj.spec.registration is not None:
            gate_result, registered = await _register(tj, binding, tracking, metrics, deps)

    memory.recovered(TRACKING)
    new_status = plan.status_patch(
        tj,
        previous=status,
        observation=observation,
        run=binding,
        run_url=plan.mlflow_run_url(binding, deps.mlflow_ui_url),
        job_name=job_name,
        metrics=metrics,
        gates=gate_result,
        registered_model_version=registered,
        now=now,
    )
    return await _write(tj, deps, memory, new_status)


def _attempt_children(
    tj: TrainingJob, binding: plan.RunBinding, attempt: int
) -> list[dict[str, Any]]:
    """One attempt's children, the same for the first attempt and a gang restart, in the
    order they are applied: the headless Service first, as the ranks resolve MASTER_ADDR
    through it from the moment they start."""
    job = plan.desired_job(tj, binding, attempt=attempt)
    service = plan.desired_headless_service(tj, job["metadata"]["name"])
    return [job] if service is None else [service, job]


async def _apply_attempt(
    tj: TrainingJob, binding: plan.RunBinding, attempt: int, deps: TrainingDeps
) -> dict[str, Any]:
    """A gang restart's children, sent at once: the restart is decided from the pods the
    watches saw, and a refusal surfaces as the pass's error."""
    applied: dict[str, Any] = {}
    for manifest in _attempt_children(tj, binding, attempt):
        applied = await asyncio.to_thread(deps.cluster.apply, manifest)
    return applied


async def _tracking_failed(
    tj: TrainingJob,
    status: TrainingJobStatus,
    deps: TrainingDeps,
    memory: ObjectMemory[None],
    error: AdapterError,
    now: datetime.datetime,
) -> Outcome:
    """Writes the blocked status and backs off, doubling with each failure in a row."""
    blocked = plan.blocked_status(tj, status, _tracking_reason(error), str(error), now)
    delay = memory.back_off(TRACKING, now, deps.jitter())
    written = await _write(tj, deps, memory, blocked)
    return Outcome(written.events, retry_after=delay)


async def _job_refused(
    tj: TrainingJob,
    status: TrainingJobStatus,
    deps: TrainingDeps,
    memory: ObjectMemory[None],
    refused: Refused,
    now: datetime.datetime,
) -> Outcome:
    if not refused.fresh:
        return Outcome([], retry_after=refused.retry_after)
    blocked = plan.blocked_status(
        tj, status, refused.reason, refused.message, now, condition=reasons.CHILDREN_APPLIED
    )
    written = await _write(tj, deps, memory, blocked)
    return Outcome(written.events, retry_after=refused.retry_after)


def _tracking_reason(error: AdapterError) -> str:
    # Unreachable or erroring MLflow is retried with backoff; a request MLflow refused
    # (deleted experiment, invalid name) needs a person, so it gets its own reason.
    return "MLflowUnavailable" if isinstance(error, UnavailableError) else "MLflowRejected"


def _ensure_run(
    tj: TrainingJob,
    status: TrainingJobStatus,
    tracking: MlflowTracking,
    tracking_uri: str,
    credentials_secret: str | None,
) -> plan.RunBinding:
    experiment = plan.experiment_name(tj)
    if status.mlflow_run_id and status.mlflow_experiment_id:
        return plan.RunBinding(
            status.mlflow_run_id,
            status.mlflow_experiment_id,
            experiment,
            tracking_uri,
            credentials_secret,
        )
    dataset = tj.spec.dataset
    run = tracking.ensure_run(
        experiment_name=experiment,
        run_name=plan.run_name(tj),
        owner_uid=str(tj.metadata.uid),
        owner_tags=plan.run_tags(tj),
        extra_tags=tj.spec.mlflow.tags if tj.spec.mlflow else {},
        params=tj.spec.hyperparameters,
        dataset=DatasetInput(uri=dataset.uri, digest=dataset.digest, version=dataset.version)
        if dataset
        else None,
    )
    return plan.RunBinding(
        run.run_id, run.experiment_id, experiment, tracking_uri, credentials_secret
    )


async def _register(
    tj: TrainingJob,
    binding: plan.RunBinding,
    tracking: MlflowTracking,
    metrics: dict[str, float],
    deps: TrainingDeps,
) -> tuple[plan.GateResult, str | None]:
    registration = tj.spec.registration
    assert registration is not None
    champion = None
    if registration.compare_to and registration.compare_metric:
        champion = await asyncio.to_thread(
            tracking.champion,
            registration.model_name,
            registration.compare_to.lstrip("@"),
            registration.compare_metric,
        )
    result = plan.evaluate_gates(
        registration.gates, metrics, champion=champion, registration=registration
    )
    if not result.passed:
        return result, None
    model_version = plan.desired_model_version(tj, binding)
    await asyncio.to_thread(deps.cluster.apply, model_version)
    return result, str(model_version["metadata"]["name"])


async def _after_finish(
    tj: TrainingJob, status: TrainingJobStatus, deps: TrainingDeps, now: datetime.datetime
) -> Outcome:
    """The TrainingJob owns its TTL (not the Job's ttlSecondsAfterFinished): deleting the
    Job alone would make a level-triggered controller recreate it."""
    ttl = tj.spec.ttl_seconds_after_finished
    if ttl is None or status.completion_time is None:
        return Outcome([])
    expires = status.completion_time + datetime.timedelta(seconds=ttl)
    if now >= expires:
        await asyncio.to_thread(
            deps.cluster.delete,
            API_VERSION,
            "TrainingJob",
            str(tj.metadata.namespace),
            str(tj.metadata.name),
            uid=str(tj.metadata.uid),
        )
        return Outcome([])
    return Outcome([], retry_after=(expires - now).total_seconds())


async def _write(
    tj: TrainingJob, deps: TrainingDeps, memory: ObjectMemory[None], planned: StatusPlan
) -> Outcome:
    events = await write_status(deps.cluster, tj, memory, planned)
    if planned.changed:
        _record_transition(tj, deps.metrics, planned.status)
    return Outcome(events)


def _record_transition(tj: TrainingJob, metrics: TrainingMetrics, written: dict[str, Any]) -> None:
    before = _phase(tj)
    after = written.get("phase")
    metrics.observe_phase(str(tj.metadata.uid), after)
    if after in TERMINAL_PHASES and before not in TERMINAL_PHASES:
        previous = tj.status.model_dump(by_alias=True, exclude_none=True) if tj.status else {}
        status = TrainingJobStatus.model_validate(
            {**previous, **{key: value for key, value in written.items() if value is not None}}
        )
        duration = (
            (status.completion_time - status.start_time).total_seconds()
            if status.completion_time and status.start_time
            else None
        )
        metrics.finished(str(after), status.failure_reason, duration)


async def kill_run_on_delete(tj: TrainingJob, deps: TrainingDeps) -> None:
    """A TrainingJob deleted mid-training leaves no run RUNNING in MLflow."""
    deps.metrics.forget(str(tj.metadata.uid))
    status = tj.status or TrainingJobStatus()
    if status.phase in TERMINAL_PHASES or not status.mlflow_run_id or not deps.default_tracking_uri:
        return
    tracking = deps.tracking_for(deps.default_tracking_uri)
    with contextlib.suppress(NotFoundError):  # a run removed by hand needs no closing
        await asyncio.to_thread(tracking.terminate_run, status.mlflow_run_id, "KILLED")
