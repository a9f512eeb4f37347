"""kopf registrations for TrainingJob and the Jobs it owns; bodies only delegate.

Jobs, pods and TrainingJobs are kept in kopf indexes fed by the operator's watches, so a
reconcile reads its children from memory: no API call per object per resync.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from mlcycle.api.v1alpha1 import GROUP, VERSION, TrainingJob
from mlcycle.handlers.kind import KindHandlers, Trigger
from mlcycle.handlers.resync import Resync
from mlcycle.plan.trainingjob import TRAININGJOB_UID_LABEL
from mlcycle.reconcile.outcome import Outcome
from mlcycle.reconcile.trainingjob import (
    TERMINAL_PHASES,
    TrainingDeps,
    kill_run_on_delete,
    reconcile_trainingjob,
)

# Safety net beside the event-driven path: catches pod-level states that never change the
# Job (a pod stuck Pending past its startup deadline) and TTL expiry. Reads only indexes.
RESYNC_SECONDS = 5.0

# kopf passes each index to every handler as a keyword argument named by its id.
JOBS_INDEX = "trainingjob_jobs"
PODS_INDEX = "trainingjob_pods"
TRAININGS_INDEX = "trainingjobs_by_uid"

_ONE_OF_OURS = {TRAININGJOB_UID_LABEL: kopf.PRESENT}


class IndexedChildren:
    """The reconciler's view of Jobs and pods, answered from kopf indexes."""

    def __init__(self, jobs: kopf.Index[Any, Any], pods: kopf.Index[Any, Any]) -> None:
        self._jobs = jobs
        self._pods = pods

    def job(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        key = (namespace, name)
        if key not in self._jobs:
            return None
        return next(iter(self._jobs[key]), None)

    def pods(self, namespace: str, job_name: str) -> Sequence[Mapping[str, Any]]:
        key = (namespace, job_name)
        return list(self._pods[key]) if key in self._pods else []


async def _reconcile(tj: TrainingJob, trigger: Trigger) -> Outcome:
    children = IndexedChildren(trigger.indexes[JOBS_INDEX], trigger.indexes[PODS_INDEX])
    return await reconcile_trainingjob(tj, _deps(trigger.memo), children, trigger.now)


def _deps(memo: Any) -> TrainingDeps:
    training: TrainingDeps = memo.context.training
    return training


def _still_active(body: Mapping[str, Any]) -> bool:
    return (body.get("status") or {}).get("phase") not in TERMINAL_PHASES or (
        (body.get("spec") or {}).get("ttlSecondsAfterFinished") is not None
    )


def register_trainingjob(registry: kopf.OperatorRegistry) -> None:
    plural = TrainingJob.plural()
    handlers = KindHandlers(
        TrainingJob,
        handler_prefix="train",
        reconcile=_reconcile,
        memory=lambda memo: _deps(memo).memory,
        resync=Resync("TrainingJob", RESYNC_SECONDS, due=_still_active),
        waiting_on="a dependency",
    )

    @kopf.index("batch", "v1", "jobs", registry=registry, labels=_ONE_OF_OURS, id=JOBS_INDEX)
    def index_job(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): body}

    @kopf.index("", "v1", "pods", registry=registry, labels=_ONE_OF_OURS, id=PODS_INDEX)
    def index_pod(
        namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        return {(namespace, labels.get("job-name")): body}

    @kopf.index(GROUP, VERSION, plural, registry=registry, id=TRAININGS_INDEX)
    def index_training(uid: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {uid: body}

    handlers.register(registry, TRAININGS_INDEX)

    @kopf.on.event("batch", "v1", "jobs", registry=registry, labels=_ONE_OF_OURS)
    async def on_job_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
        owner_uid = body["metadata"]["labels"][TRAININGJOB_UID_LABEL]
        trainings: kopf.Index[Any, Any] = kwargs[TRAININGS_INDEX]
        if owner_uid not in trainings:
            return
        parent = next(iter(trainings[owner_uid]), None)
        if parent is not None and not parent["metadata"].get("deletionTimestamp"):
            await handlers.trigger(parent, memo, kwargs)

    def run_may_be_open(status: Mapping[str, Any], **_: Any) -> bool:
        return status.get("phase") not in TERMINAL_PHASES and bool(status.get("mlflowRunId"))

    def run_closed(status: Mapping[str, Any], **kwargs: Any) -> bool:
        return not run_may_be_open(status, **kwargs)

    async def on_delete(body: kopf.Body, memo: Any, **_: Any) -> None:
        tj = handlers.deleted(body, memo)
        if tj is not None:
            await kill_run_on_delete(tj, _deps(memo))

    # The finalizer guards one thing: a RUNNING MLflow run closed KILLED. A training whose
    # run is finished (or not yet made) has nothing to clean up, so its handler is
    # optional and asks for no finalizer.
    kopf.on.delete(
        GROUP, VERSION, plural, registry=registry, id="train-delete", when=run_may_be_open
    )(on_delete)
    kopf.on.delete(
        GROUP,
        VERSION,
        plural,
        registry=registry,
        id="train-forget",
        when=run_closed,
        optional=True,
    )(on_delete)
