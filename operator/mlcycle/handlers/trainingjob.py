"""kopf registrations for TrainingJob and the Jobs it owns; bodies only delegate."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any, cast

import kopf
from pydantic import ValidationError

from mlcycle.api.v1alpha1 import API_VERSION, GROUP, VERSION, TrainingJob
from mlcycle.handlers.acceptance import record_acceptance
from mlcycle.reconcile.trainingjob import (
    TERMINAL_PHASES,
    TrainingDeps,
    TrainingOutcome,
    kill_run_on_delete,
    reconcile_trainingjob,
)

# Safety net beside the event-driven path: catches pod-level states that never change the
# Job (a pod stuck Pending past its startup deadline) and TTL expiry.
RESYNC_SECONDS = 5.0


def _post(body: Mapping[str, Any], outcome: TrainingOutcome) -> None:
    for event in outcome.events:
        kopf.event(
            cast(kopf.Body, body), type=event.type, reason=event.reason, message=event.message
        )


async def _reconcile_body(body: Mapping[str, Any], deps: TrainingDeps) -> TrainingOutcome:
    tj = TrainingJob.from_body(body)
    outcome = await reconcile_trainingjob(tj, deps, datetime.datetime.now(datetime.UTC))
    _post(body, outcome)
    return outcome


def _deps(memo: Any) -> TrainingDeps:
    training: TrainingDeps = memo.context.training
    return training


def register_trainingjob(registry: kopf.OperatorRegistry) -> None:
    plural = TrainingJob.plural()

    async def on_change(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        try:
            with memo.context.metrics.reconciling("TrainingJob"):
                outcome = await _reconcile_body(body, _deps(memo))
        except ValidationError:
            record_acceptance(TrainingJob, body, patch)  # InvalidSpec, as for every kind
            return
        if outcome.retry_after is not None:
            raise kopf.TemporaryError("waiting on a dependency", delay=outcome.retry_after)

    for cause, register in (
        ("create", kopf.on.create),
        ("update", kopf.on.update),
        ("resume", kopf.on.resume),
    ):
        register(GROUP, VERSION, plural, registry=registry, id=f"train-{cause}")(on_change)

    def still_active(status: Mapping[str, Any], spec: Mapping[str, Any], **_: Any) -> bool:
        return status.get("phase") not in TERMINAL_PHASES or bool(
            spec.get("ttlSecondsAfterFinished") is not None
        )

    @kopf.timer(
        GROUP,
        VERSION,
        plural,
        registry=registry,
        interval=RESYNC_SECONDS,
        when=still_active,
        id="train-resync",
    )
    async def resync(body: kopf.Body, memo: Any, **_: Any) -> None:
        try:
            await _reconcile_body(body, _deps(memo))
        except ValidationError:
            return

    @kopf.on.event(
        "batch", "v1", "jobs", registry=registry, labels={"mlcycle.dev/trainingjob": kopf.PRESENT}
    )
    async def on_job_event(body: kopf.Body, memo: Any, **_: Any) -> None:
        deps = _deps(memo)
        namespace = body["metadata"]["namespace"]
        owner = body["metadata"]["labels"]["mlcycle.dev/trainingjob"]
        parent = await asyncio.to_thread(
            deps.cluster.get, API_VERSION, "TrainingJob", namespace, owner
        )
        if parent is not None and not (parent.get("metadata") or {}).get("deletionTimestamp"):
            try:
                await _reconcile_body(parent, deps)
            except ValidationError:
                return

    @kopf.on.delete(GROUP, VERSION, plural, registry=registry, id="train-delete")
    async def on_delete(body: kopf.Body, memo: Any, **_: Any) -> None:
        try:
            tj = TrainingJob.from_body(body)
        except ValidationError:
            return
        await kill_run_on_delete(tj, _deps(memo))
