"""The status of an InferenceService after a pass: conditions, tracks with their replicas
and served weights, the URL; written as a merge patch only when it changed, with Events
for the conditions that moved."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from mlcycle.api.v1alpha1.inferenceservice import (
    InferenceService,
    InferenceServiceStatus,
    TrackStatus,
)
from mlcycle.plan import reasons
from mlcycle.plan.conditions import (
    ConditionSet,
    EventIntent,
    StatusPlan,
    cap_message,
    find_condition,
    status_changed,
)
from mlcycle.plan.inferenceservice.decision import RolloutPlan
from mlcycle.plan.inferenceservice.observe import Observed
from mlcycle.plan.inferenceservice.servers import desired_replicas
from mlcycle.plan.status_diff import merge_patch
from mlcycle.plan.traffic import service_url, traffic_mode


def _track_with_replicas(
    track: TrackStatus | None, observed: Observed, replicas: Mapping[str, int]
) -> TrackStatus | None:
    if track is None or track.version is None:
        return track
    return track.model_copy(
        update={
            "replicas": replicas.get(track.version),
            "ready_replicas": observed.ready_replicas.get(track.version, 0),
        }
    )


def status_plan(
    isvc: InferenceService, observed: Observed, plan: RolloutPlan, now: datetime.datetime
) -> StatusPlan:
    """The status for this plan (the patch clears what is gone), Events for what moved."""
    before = isvc.status or InferenceServiceStatus()
    conditions = ConditionSet(before.conditions, isvc.metadata.generation, now)
    conditions.put(reasons.ACCEPTED, True, reasons.SPEC_VALID, "spec accepted")
    if observed.blocked is not None:
        conditions.put(
            reasons.MODEL_RESOLVED, False, observed.blocked.reason, observed.blocked.message
        )
    elif observed.target is not None:
        target = observed.target
        conditions.put(
            reasons.MODEL_RESOLVED,
            True,
            reasons.RESOLVED,
            f"version {target.version} of {target.model_name} ({target.uri})",
        )
    mode = traffic_mode(isvc)
    replicas = desired_replicas(isvc, plan)
    stable, canary = mode.observed_weights(
        _track_with_replicas(plan.stable, observed, replicas),
        _track_with_replicas(plan.canary, observed, replicas),
    )
    serving = stable is not None and (stable.ready_replicas or 0) > 0
    traffic = serving and mode.entry_ready(observed)
    conditions.put(
        reasons.TRAFFIC_AVAILABLE,
        traffic,
        reasons.SERVING if traffic else reasons.NOT_SERVING,
        mode.traffic_message(isvc, observed, stable, traffic),
    )
    if observed.refused is not None:
        conditions.put(reasons.CHILDREN_APPLIED, False, *observed.refused)
    else:
        conditions.put(reasons.CHILDREN_APPLIED, True, reasons.APPLIED, "every child applied")
    reason, message = plan.progress
    conditions.put(reasons.PROGRESSING, canary is not None, reason, message)
    rejected = plan.rejected
    if rejected is not None:
        conditions.put(
            reasons.ROLLED_BACK_CONDITION,
            True,
            reasons.ROLLED_BACK,
            f"version {rejected.version}: {rejected.reason}",
        )
    else:
        conditions.put(
            reasons.ROLLED_BACK_CONDITION, False, reasons.NO_ROLLBACK, "no version rolled back"
        )
    ready = plan.phase == "Ready" and traffic and observed.refused is None
    if observed.refused is not None:
        conditions.put(reasons.READY, False, *observed.refused)
    else:
        conditions.put(
            reasons.READY,
            ready,
            reasons.SERVING
            if ready
            else (reasons.NOT_SERVING if plan.phase == "Ready" else plan.phase),
            f"version {stable.version} serves all traffic" if ready and stable else message,
        )
    model_name = observed.target.model_name if observed.target else before.model_name
    status = before.model_copy(
        update={
            "observed_generation": isvc.metadata.generation,
            # Not Ready while a child is refused: the phase never contradicts the condition.
            "phase": "Progressing" if plan.phase == "Ready" and observed.refused else plan.phase,
            "conditions": conditions.conditions,
            "url": service_url(isvc),
            "model_name": model_name,
            "stable": stable,
            "canary": canary,
            "history": plan.history,
            "rejected": rejected,
            "pending_registry_writes": plan.pending_writes,
            "handled_annotations": plan.handled_annotations,
        }
    )
    recorded = _compact(before)
    compact = _compact(status)
    events = list(plan.events)
    for type_ in (
        reasons.MODEL_RESOLVED,
        reasons.TRAFFIC_AVAILABLE,
        reasons.CHILDREN_APPLIED,
        reasons.READY,
    ):
        old = find_condition(before.conditions, type_)
        new = find_condition(conditions.conditions, type_)
        if new is not None and (
            old is None or (old.status, old.reason) != (new.status, new.reason)
        ):
            healthy = new.status == "True"
            events.append(
                EventIntent(
                    "Normal" if healthy else "Warning", new.reason, cap_message(new.message)
                )
            )
    patch = merge_patch(recorded, compact)
    return StatusPlan(patch, events, status_changed(recorded, compact) or recorded != compact)


def _compact(status: InferenceServiceStatus) -> dict[str, Any]:
    dumped: dict[str, Any] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped
