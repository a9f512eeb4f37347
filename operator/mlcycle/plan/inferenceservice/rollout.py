"""The rollout state machine: one pass from the status and the observation to a
`RolloutPlan`.

Pure: what the registry, the Deployments and the router said arrives as an `Observed`, the
clock is an argument. Every piece of rollout state (step, step start, failed checks, the
counters at the step start, the rejected version) lives in status, so a restarted operator
plans exactly what the previous one would have.

The rollout
-----------
A resolved version other than the stable one becomes the candidate (`status.canary`).
Each step waits for the candidate's readiness, then applies the step's weight and starts
the interval; when the interval is over, the counters since the step start are analysed
(`steps`, `analysis`): Passed moves to the next step (after the last one: promote), Held
(fewer than `minRequests`) restarts the interval on the same step, Failed counts a failed
check and restarts the interval, and `failureThreshold` failed checks roll back.

- Canary: `steps` are live weights. Shadow: `steps` are mirror percentages; live traffic
  stays on stable and agreement is checked. ABTest: the header pins to the candidate and
  `abTest.weight` of the rest goes there; the analysis can roll back, promotion is by
  annotation. Immediate: promote once the candidate is ready.
- Promotion scales the candidate to the stable's size (Promoting), then makes it stable
  (100%) and removes the old version; the registry gets `promoteAlias` and
  `rollout=promoted`. Rollback sends 100% to stable at once, removes the candidate, tags
  it `rollout=failed` with the reason and records it in `status.rejected`: it is not tried
  again until the spec's generation changes or `mlcycle.dev/retry` is set (`endings`).
  Registry writes follow traffic, never precede it (`registry_writeback`).
- Annotations act once per value (`status.handledAnnotations`) and stay where the user
  (or Git) put them: `mlcycle.dev/promote` promotes the candidate now, `mlcycle.dev/abort`
  rolls it back now, `mlcycle.dev/retry` forgets the rejected version so it rolls out
  again. A new value acts again. `spec.paused` holds the current step.
"""

from __future__ import annotations

import datetime
from typing import Final

from mlcycle.api.v1alpha1.inferenceservice import (
    InferenceService,
    InferenceServiceStatus,
    TrackStatus,
)
from mlcycle.plan import reasons
from mlcycle.plan.inferenceservice.analysis import duration_seconds
from mlcycle.plan.inferenceservice.decision import RolloutDecision, RolloutPlan
from mlcycle.plan.inferenceservice.endings import end_canary, promote, roll_back
from mlcycle.plan.inferenceservice.observe import Observed
from mlcycle.plan.inferenceservice.registry_writeback import queued
from mlcycle.plan.inferenceservice.resolve import Blocked
from mlcycle.plan.inferenceservice.steps import analyse_interval, start_step, step_progress
from mlcycle.plan.traffic import traffic_mode

PROMOTE_ANNOTATION: Final = "mlcycle.dev/promote"
ABORT_ANNOTATION: Final = "mlcycle.dev/abort"
RETRY_ANNOTATION: Final = "mlcycle.dev/retry"


def plan_rollout(isvc: InferenceService, observed: Observed, now: datetime.datetime) -> RolloutPlan:
    """One step of the state machine: same status and observation, same plan."""
    plan = _decide(RolloutDecision(isvc, observed, now))
    before = (isvc.status or InferenceServiceStatus()).pending_registry_writes
    plan.pending_writes = queued(before, plan.registry_writes)
    return plan


def _decide(decision: RolloutDecision) -> RolloutPlan:
    """The transition the status and the observation call for: a first stable, the stable
    asked for again, a rejected version asked for again, or a candidate to advance."""
    plan = decision.plan
    generation = decision.isvc.metadata.generation
    if decision.take_annotation(RETRY_ANNOTATION) and plan.rejected is not None:
        decision.event(
            False,
            reasons.RETRY_REQUESTED,
            f"version {plan.rejected.version} may roll out again (mlcycle.dev/retry)",
        )
        plan.rejected = None
    if plan.rejected is not None and plan.rejected.generation != generation:
        plan.rejected = None  # the spec changed again: its version is wanted anew
    target = decision.observed.target
    if target is None:
        _blocked(decision)
        return plan
    if plan.stable is None or plan.stable.version is None:
        plan.stable = TrackStatus(
            version=target.version,
            model_uri=target.uri,
            model_version=target.model_version_object,
            weight=100,
            started_at=decision.now,
        )
        decision.event(False, reasons.DEPLOYING, f"deploying version {target.version}")
    if plan.stable.version == target.version:
        if plan.canary is not None:
            end_canary(decision, "Aborted", f"the spec asks for stable version {target.version}")
        decision.take_annotation(PROMOTE_ANNOTATION)
        decision.take_annotation(ABORT_ANNOTATION)
        _settle(decision)
        return plan
    if plan.rejected is not None and plan.rejected.version == target.version:
        if plan.canary is not None and plan.canary.version == target.version:
            plan.canary = None
        plan.phase = "RolledBack"
        plan.progress = (
            reasons.ROLLED_BACK,
            f"version {target.version} was rolled back ({plan.rejected.reason});"
            " set mlcycle.dev/retry or change the spec to try again",
        )
        decision.take_annotation(PROMOTE_ANNOTATION)
        decision.take_annotation(ABORT_ANNOTATION)
        return plan
    if plan.canary is not None and plan.canary.version != target.version:
        end_canary(decision, "Aborted", f"superseded by version {target.version}")
    if plan.canary is None:
        plan.canary = TrackStatus(
            version=target.version,
            model_uri=target.uri,
            model_version=target.model_version_object,
            weight=0,
            step=0,
            failed_checks=0,
            started_at=decision.now,
        )
        strategy = decision.isvc.spec.rollout.strategy
        decision.event(
            False,
            reasons.ROLLOUT_STARTED,
            f"{strategy} rollout of version {target.version} started"
            f" (stable {plan.stable.version})",
        )
    _advance(decision, plan.canary)
    return plan


def _blocked(decision: RolloutDecision) -> None:
    """No version resolved: whatever serves keeps serving, and a candidate in flight stays
    where it is (or, through an MLflow outage, goes on)."""
    plan = decision.plan
    blocked = decision.observed.blocked or Blocked(reasons.MODEL_VERSION_NOT_READY, "no model")
    plan.progress = (blocked.reason, blocked.message)
    if plan.stable is None:
        plan.phase = "Failed" if blocked.failed else "Progressing"
        return
    if plan.canary is not None:
        if blocked.reason == reasons.MLFLOW_UNAVAILABLE:
            # An outage says nothing about the candidate in flight, and neither its
            # analysis nor moving traffic needs MLflow: a failing candidate still rolls
            # back at once; the registry write-back waits for MLflow.
            _advance(decision, plan.canary)
            return
        # Keep the rollout where it is: the model may come back (an alias being moved,
        # a ModelVersion re-registered); a person aborts it if not.
        plan.phase = "Progressing"
        return
    if blocked.reason == reasons.MLFLOW_UNAVAILABLE and plan.rejected is not None:
        # The version last asked for was rolled back; an outage does not change that.
        plan.phase = "RolledBack"
        plan.progress = (
            reasons.ROLLED_BACK,
            f"version {plan.rejected.version} was rolled back ({plan.rejected.reason})",
        )
        return
    _settle(decision)


def _settle(decision: RolloutDecision) -> None:
    """No candidate: Ready once the stable serves."""
    plan = decision.plan
    stable = plan.stable
    ready = (
        stable is not None
        and decision.ready(stable.version) > 0
        and traffic_mode(decision.isvc).entry_ready(decision.observed)
    )
    plan.phase = "Ready" if ready else "Progressing"
    if stable is not None and plan.rejected is None:
        plan.progress = (reasons.ROLLOUT_COMPLETE, f"version {stable.version} is stable")
    if not ready:
        plan.progress = (
            reasons.WAITING_FOR_READINESS,
            f"waiting for version {stable.version if stable else '?'} to be ready",
        )


def _advance(decision: RolloutDecision, canary: TrackStatus) -> None:
    """The candidate's next move: an annotation's action, promotion, a pause, a wait for
    readiness, a step's start or its analysis."""
    plan, spec = decision.plan, decision.isvc.spec
    if decision.take_annotation(ABORT_ANNOTATION):
        roll_back(decision, "Aborted", "aborted by annotation mlcycle.dev/abort")
        return
    if decision.take_annotation(PROMOTE_ANNOTATION):
        decision.event(
            False,
            reasons.PROMOTION_REQUESTED,
            f"promotion of version {canary.version} requested (mlcycle.dev/promote)",
        )
        promote(decision, canary)
        return
    if canary.promoting:
        promote(decision, canary)
        return
    if spec.paused:
        plan.phase = "Paused"
        plan.progress = (reasons.PAUSED, f"paused at step {canary.step} (spec.paused)")
        return
    plan.phase = "Progressing"
    # One ready pod takes a step's share; promotion waits for the full size.
    if decision.ready(canary.version) < 1:
        plan.progress = (
            reasons.WAITING_FOR_CANDIDATE,
            f"waiting for version {canary.version} to be ready",
        )
        return
    strategy = spec.rollout.strategy
    if strategy == "Immediate":
        promote(decision, canary)
        return
    if canary.step_started_at is None:
        start_step(decision, canary, canary.step or 0)
        return
    interval = datetime.timedelta(seconds=duration_seconds(spec.rollout.interval))
    plan.progress = step_progress(decision, canary)
    if decision.now - canary.step_started_at < interval:
        return
    analyse_interval(decision, canary)
