"""InferenceService decisions: which version to serve, the rollout state machine, the
children of router mode, and the status.

Pure: what the registry, the Deployments and the router said arrives as an `Observed`, the
clock is an argument. Every piece of rollout state (step, step start, failed checks, the
counters at the step start, the rejected version) lives in status, so a restarted operator
plans exactly what the previous one would have.

The rollout
-----------
A resolved version other than the stable one becomes the candidate (`status.canary`).
Each step waits for the candidate's readiness, then applies the step's weight and starts
the interval; when the interval is over, the router's counters since the step start are
analysed (`plan.analysis`): Passed moves to the next step (after the last one: promote),
Held (fewer than `minRequests`) restarts the interval on the same step, Failed counts a
failed check and restarts the interval, and `failureThreshold` failed checks roll back.

- Canary: `steps` are live weights. Shadow: `steps` are mirror percentages; live traffic
  stays on stable and agreement is checked. ABTest: the header pins to the candidate and
  `abTest.weight` of the rest goes there; the analysis can roll back, promotion is by
  annotation. Immediate: promote once the candidate is ready.
- Promotion scales the candidate to the stable's size (Promoting), then makes it stable
  (100%) and removes the old version; the registry gets `promoteAlias` and
  `rollout=promoted`. Rollback sends 100% to stable at once, removes the candidate, tags
  it `rollout=failed` with the reason and records it in `status.rejected`: it is not tried
  again until the spec's generation changes or `mlcycle.dev/retry` is set. Registry
  writes follow traffic, never precede it (`plan.registry_writeback`).
- Annotations act once per value (`status.handledAnnotations`) and stay where the user
  (or Git) put them: `mlcycle.dev/promote` promotes the candidate now, `mlcycle.dev/abort`
  rolls it back now, `mlcycle.dev/retry` forgets the rejected version so it rolls out
  again. A new value acts again. `spec.paused` holds the current step.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from mlcycle.api.v1alpha1.common import WorkloadTemplate
from mlcycle.api.v1alpha1.inferenceservice import (
    AnalysisResult,
    CounterSample,
    InferenceService,
    InferenceServicePhase,
    InferenceServiceStatus,
    PendingRegistryWrite,
    RejectedVersion,
    RolloutRecord,
    TrackStatus,
)
from mlcycle.api.v1alpha1.modelversion import ModelVersion
from mlcycle.dataplane.router.config import DEFAULT_CONFIGMAP_KEY, RouterConfig
from mlcycle.plan import reasons
from mlcycle.plan.analysis import analyse, duration_seconds, interval_figures
from mlcycle.plan.conditions import (
    ConditionSet,
    EventIntent,
    StatusPlan,
    cap_message,
    find_condition,
    status_changed,
)
from mlcycle.plan.modelversion import is_approved, requires_approval
from mlcycle.plan.ownership import controller_reference
from mlcycle.plan.registry_writeback import queued
from mlcycle.plan.serving_names import (
    COMPONENT_LABEL,
    GRPC_PORT,
    GRPC_PORT_NAME,
    MODEL_SERVER_COMPONENT,
    ROUTER_COMPONENT,
    VERSION_LABEL,
    child_labels,
    child_name,
    router_name,
    router_selector,
    service_ports,
    version_name,
    version_selector,
)
from mlcycle.plan.traffic_replicas import effective_weight, replica_split
from mlcycle.plan.workload import merged_env, mlflow_env, with_workload

PROMOTE_ANNOTATION: Final = "mlcycle.dev/promote"
ABORT_ANNOTATION: Final = "mlcycle.dev/abort"
RETRY_ANNOTATION: Final = "mlcycle.dev/retry"


DEFAULT_IMAGE: Final = "ghcr.io/mlcycle/mlcycle:0.1.0"
"""For pods whose spec names no image, when the operator is given none (`--serving-image`;
the chart passes its own image, so servers run the operator's release)."""
SERVER_PORT: Final = 8080
ROUTER_PORT: Final = 8080
ROUTER_ADMIN_PORT: Final = 9090
HISTORY_LIMIT: Final = 20
ROLLOUT_TAG: Final = "rollout"
ROLLOUT_REASON_TAG: Final = "rollout.reason"

Track = Literal["stable", "canary"]


# --- The version to serve -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The registry version the spec asks for."""

    model_name: str
    version: str
    model_version_object: str | None = None
    approval_required: bool = False
    """The registry version carries the approval-required tag mlcycle registers it with."""

    @property
    def uri(self) -> str:
        return model_uri(self.model_name, self.version)


@dataclass(frozen=True)
class Blocked:
    """Why no version can be resolved (nothing new is deployed; the stable keeps serving)."""

    reason: str
    message: str
    failed: bool = False


def model_uri(model_name: str, version: str) -> str:
    return f"models:/{model_name}/{version}"


def target_from_model_version(isvc: InferenceService, mv: ModelVersion | None) -> Target | Blocked:
    """A ModelVersion is served once Ready, and approved when approval is required."""
    ref = isvc.spec.model.model_version_ref
    assert ref is not None
    if mv is None:
        return Blocked(
            reasons.MODEL_VERSION_NOT_FOUND,
            f"ModelVersion {ref.name} does not exist in namespace {isvc.metadata.namespace}",
        )
    if not is_approved(mv):
        return Blocked(
            reasons.NOT_APPROVED,
            f"ModelVersion {ref.name} requires approval (spec.approval.approvedBy): not deployed",
        )
    status = mv.status
    if status is None or status.phase != "Ready" or not status.version:
        phase = status.phase if status is not None and status.phase else "Pending"
        return Blocked(
            reasons.MODEL_VERSION_NOT_READY,
            f"ModelVersion {ref.name} is {phase}, not Ready",
            failed=phase == "Failed",
        )
    return Target(mv.spec.model_name, status.version, model_version_object=ref.name)


def approval_gate(target: Target, tracking: Sequence[ModelVersion]) -> Target | Blocked:
    """However the spec names the version (ModelVersion, registry version or alias), it is
    served only once approved when it requires approval: mlcycle registered it so (the
    registry tag) or a ModelVersion tracking it asks for it. An approval counts only on a
    ModelVersion that requires it; the chart's admission policy lets only approvers set it,
    so an object adopting the version without approval cannot stand in for one."""
    tracking = [
        mv
        for mv in tracking
        if mv.spec.model_name == target.model_name
        and mv.status is not None
        and mv.status.version == target.version
    ]
    requiring = [mv for mv in tracking if requires_approval(mv)]
    if not target.approval_required and not requiring:
        return target
    if any(is_approved(mv) for mv in requiring):
        return target
    where = ", ".join(sorted(f"{mv.metadata.namespace}/{mv.metadata.name}" for mv in requiring))
    how = (
        f"an approver sets spec.approval.approvedBy on ModelVersion {where}"
        if where
        else "an approver approves a ModelVersion tracking it"
    )
    return Blocked(
        reasons.NOT_APPROVED,
        f"version {target.version} of {target.model_name} requires approval: not deployed"
        f" until {how}",
    )


def served_model_name(isvc: InferenceService) -> str | None:
    """The registered model, when the spec names it (a ModelVersion names it itself)."""
    return isvc.spec.model.name


# --- Observation --------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    target: Target | None
    blocked: Blocked | None = None
    ready_replicas: Mapping[str, int] = field(default_factory=dict)
    """Ready pods of each version's Deployment."""
    router_ready: int = 0
    refused: tuple[str, str] | None = None
    """(reason, message) of a child the API server refused: traffic is not what it should be."""
    canary_sample: CounterSample | None = None
    """The candidate's counters summed over the router pods; None when not read."""
    queries: Mapping[str, float | None] | None = None
    """Prometheus checks, by name, when an operator with Prometheus ran them."""


# --- The rollout state machine ------------------------------------------------------------


@dataclass(frozen=True)
class RolloutOutcome:
    """A finished rollout, for the operator's metrics."""

    outcome: Literal["Promoted", "RolledBack", "Aborted"]
    duration_seconds: float | None


@dataclass
class RolloutPlan:
    """What one pass decided: the new tracks, the writes, the Events."""

    stable: TrackStatus | None
    canary: TrackStatus | None
    rejected: RejectedVersion | None
    history: list[RolloutRecord]
    phase: InferenceServicePhase
    events: list[EventIntent] = field(default_factory=list)
    registry_writes: list[PendingRegistryWrite] = field(default_factory=list)
    """Write-backs decided in this pass."""
    pending_writes: list[PendingRegistryWrite] = field(default_factory=list)
    """Every write-back owed to the registry, oldest first (status's, then this pass's)."""
    handled_annotations: dict[str, str] = field(default_factory=dict)
    """Action annotations acted on, by key: the value each last acted with."""
    outcome: RolloutOutcome | None = None
    analysis: AnalysisResult | None = None
    """The analysis made in this pass, if one was due."""
    progress: tuple[str, str] = (reasons.ROLLOUT_COMPLETE, "no rollout in progress")
    """(reason, message) of the Progressing condition."""


def entry_ready(isvc: InferenceService, observed: Observed) -> bool:
    """Whether what clients call can answer: the router's pods in router mode; a Service
    or a Gateway has no readiness of its own, so elsewhere the stable's pods decide."""
    return isvc.spec.traffic.mode != "router" or observed.router_ready > 0


def strategy_weight(isvc: InferenceService, step: int) -> int:
    """The candidate's live weight at `step`."""
    rollout = isvc.spec.rollout
    if rollout.strategy == "Canary":
        return rollout.steps[min(step, len(rollout.steps) - 1)]
    if rollout.strategy == "ABTest" and rollout.ab_test is not None:
        return rollout.ab_test.weight
    return 0


def mirror_percent(isvc: InferenceService, canary: TrackStatus | None) -> int:
    """Shadow: the share of requests mirrored to the candidate at its step."""
    if canary is None or isvc.spec.rollout.strategy != "Shadow":
        return 0
    if canary.step_started_at is None:
        return 0
    steps = isvc.spec.rollout.steps
    return steps[min(canary.step or 0, len(steps) - 1)]


def full_replicas(isvc: InferenceService) -> int:
    server = isvc.spec.server
    return server.min_replicas if server.min_replicas is not None else server.replicas


def desired_replicas(isvc: InferenceService, plan: RolloutPlan) -> dict[str, int]:
    """Replicas per version. surge: the candidate runs at full size beside the stable;
    neutral: the candidate gets its step's share and the stable gives it up (a fixed GPU
    budget), never below one pod while it serves."""
    full = full_replicas(isvc)
    replicas: dict[str, int] = {}
    if plan.stable is not None and plan.stable.version is not None:
        replicas[plan.stable.version] = full
    canary = plan.canary
    if canary is None or canary.version is None:
        return replicas
    share = strategy_weight(isvc, canary.step or 0)
    if isvc.spec.traffic.mode == "replicas" and not canary.promoting:
        # The pods are the split: a ready candidate pod takes its share at once, so the
        # candidate starts at the first step's share rather than waiting at 0%.
        stable_count, canary_count = replica_split(
            full, share, capacity=isvc.spec.rollout.capacity, stable_replicas=full
        )
        if plan.stable is not None and plan.stable.version is not None:
            replicas[plan.stable.version] = stable_count
        replicas[canary.version] = canary_count
        return replicas
    neutral = isvc.spec.rollout.capacity == "neutral" and isvc.spec.rollout.strategy == "Canary"
    canary_share = min(full, max(1, math.ceil(full * share / 100)))
    replicas[canary.version] = full if canary.promoting or not neutral else canary_share
    if neutral and plan.stable is not None and plan.stable.version is not None and full > 0:
        # While promoting, the stable keeps its share until the candidate takes over.
        replicas[plan.stable.version] = max(1, full - canary_share)
    return replicas


def _record(
    canary: TrackStatus, outcome: Literal["Promoted", "RolledBack", "Aborted"], reason: str,
    now: datetime.datetime,
) -> RolloutRecord:  # fmt: skip
    return RolloutRecord(
        version=str(canary.version),
        outcome=outcome,
        reason=cap_message(reason),
        start_time=canary.started_at,
        end_time=now,
    )


def _duration(canary: TrackStatus, now: datetime.datetime) -> float | None:
    return (now - canary.started_at).total_seconds() if canary.started_at else None


def _failure_tags(reason: str) -> dict[str, str]:
    # MLflow tag values run to 5000 characters; a reason is capped far below that anyway.
    return {ROLLOUT_TAG: "failed", ROLLOUT_REASON_TAG: reason[:1000]}


class _Pass:
    """One pass of the state machine over a copy of the status."""

    def __init__(self, isvc: InferenceService, observed: Observed, now: datetime.datetime):
        self.isvc = isvc
        self.observed = observed
        self.now = now
        status = isvc.status or InferenceServiceStatus()
        self.plan = RolloutPlan(
            stable=status.stable,
            canary=status.canary,
            rejected=status.rejected,
            history=list(status.history),
            phase="Progressing",
        )
        self.annotations = isvc.metadata.annotations
        # A handled value is remembered while the annotation stays; once removed, setting
        # it again (any value) is a new request.
        self.plan.handled_annotations = {
            key: value
            for key, value in status.handled_annotations.items()
            if key in self.annotations
        }
        self.model_name = (
            observed.target.model_name if observed.target else (status.model_name or "")
        )

    def event(self, warning: bool, reason: str, message: str) -> None:
        self.plan.events.append(
            EventIntent("Warning" if warning else "Normal", reason, cap_message(message))
        )

    def take_annotation(self, key: str) -> bool:
        """Whether `key` asks for its action now: present with a value not yet acted on.
        The annotation is left in place (a GitOps tool would put it back and ask again);
        its value is recorded as handled in the same status write as the action."""
        value = self.annotations.get(key)
        if value is None or self.plan.handled_annotations.get(key) == value:
            return False
        self.plan.handled_annotations[key] = value
        return True

    # -- transitions --

    def run(self) -> RolloutPlan:
        plan = self.plan
        generation = self.isvc.metadata.generation
        if self.take_annotation(RETRY_ANNOTATION) and plan.rejected is not None:
            self.event(
                False,
                reasons.RETRY_REQUESTED,
                f"version {plan.rejected.version} may roll out again (mlcycle.dev/retry)",
            )
            plan.rejected = None
        if plan.rejected is not None and plan.rejected.generation != generation:
            plan.rejected = None  # the spec changed again: its version is wanted anew
        target = self.observed.target
        if target is None:
            self.blocked()
            return plan
        if plan.stable is None or plan.stable.version is None:
            plan.stable = TrackStatus(
                version=target.version,
                model_uri=target.uri,
                model_version=target.model_version_object,
                weight=100,
                started_at=self.now,
            )
            self.event(False, reasons.DEPLOYING, f"deploying version {target.version}")
        if plan.stable.version == target.version:
            if plan.canary is not None:
                self.end_canary("Aborted", f"the spec asks for stable version {target.version}")
            self.take_annotation(PROMOTE_ANNOTATION)
            self.take_annotation(ABORT_ANNOTATION)
            self.settle()
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
            self.take_annotation(PROMOTE_ANNOTATION)
            self.take_annotation(ABORT_ANNOTATION)
            return plan
        if plan.canary is not None and plan.canary.version != target.version:
            self.end_canary("Aborted", f"superseded by version {target.version}")
        if plan.canary is None:
            plan.canary = TrackStatus(
                version=target.version,
                model_uri=target.uri,
                model_version=target.model_version_object,
                weight=0,
                step=0,
                failed_checks=0,
                started_at=self.now,
            )
            strategy = self.isvc.spec.rollout.strategy
            self.event(
                False,
                reasons.ROLLOUT_STARTED,
                f"{strategy} rollout of version {target.version} started"
                f" (stable {plan.stable.version})",
            )
        self.advance(plan.canary)
        return plan

    def blocked(self) -> None:
        plan = self.plan
        blocked = self.observed.blocked or Blocked(reasons.MODEL_VERSION_NOT_READY, "no model")
        plan.progress = (blocked.reason, blocked.message)
        if plan.stable is None:
            plan.phase = "Failed" if blocked.failed else "Progressing"
            return
        if plan.canary is not None:
            if blocked.reason == reasons.MLFLOW_UNAVAILABLE:
                # An outage says nothing about the candidate in flight, and neither its
                # analysis nor moving traffic needs MLflow: a failing candidate still rolls
                # back at once; the registry write-back waits for MLflow.
                self.advance(plan.canary)
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
        self.settle()

    def settle(self) -> None:
        """No candidate: Ready once the stable serves."""
        plan = self.plan
        stable = plan.stable
        ready = (
            stable is not None
            and self.ready(stable.version) > 0
            and entry_ready(self.isvc, self.observed)
        )
        plan.phase = "Ready" if ready else "Progressing"
        if stable is not None and plan.rejected is None:
            plan.progress = (reasons.ROLLOUT_COMPLETE, f"version {stable.version} is stable")
        if not ready:
            plan.progress = (
                reasons.WAITING_FOR_READINESS,
                f"waiting for version {stable.version if stable else '?'} to be ready",
            )

    def ready(self, version: str | None) -> int:
        return self.observed.ready_replicas.get(version or "", 0)

    def advance(self, canary: TrackStatus) -> None:
        plan, spec = self.plan, self.isvc.spec
        if self.take_annotation(ABORT_ANNOTATION):
            self.roll_back("Aborted", "aborted by annotation mlcycle.dev/abort")
            return
        if self.take_annotation(PROMOTE_ANNOTATION):
            self.event(
                False,
                reasons.PROMOTION_REQUESTED,
                f"promotion of version {canary.version} requested (mlcycle.dev/promote)",
            )
            self.promote(canary)
            return
        if canary.promoting:
            self.promote(canary)
            return
        if spec.paused:
            plan.phase = "Paused"
            plan.progress = (reasons.PAUSED, f"paused at step {canary.step} (spec.paused)")
            return
        plan.phase = "Progressing"
        # One ready pod takes a step's share; promotion waits for the full size.
        if self.ready(canary.version) < 1:
            plan.progress = (
                reasons.WAITING_FOR_CANDIDATE,
                f"waiting for version {canary.version} to be ready",
            )
            return
        strategy = spec.rollout.strategy
        if strategy == "Immediate":
            self.promote(canary)
            return
        if canary.step_started_at is None:
            self.start_step(canary, canary.step or 0)
            return
        interval = datetime.timedelta(seconds=duration_seconds(spec.rollout.interval))
        plan.progress = self.step_progress(canary)
        if self.now - canary.step_started_at < interval:
            return
        self.analyse(canary)

    def step_progress(self, canary: TrackStatus) -> tuple[str, str]:
        strategy = self.isvc.spec.rollout.strategy
        step = canary.step or 0
        if strategy == "Shadow":
            what = f"mirroring {mirror_percent(self.isvc, canary)}% to"
        else:
            what = f"{canary.weight}% of traffic on"
        return (
            reasons.STEP_IN_PROGRESS,
            f"step {step + 1}/{len(self.isvc.spec.rollout.steps)}: {what} version"
            f" {canary.version}, {canary.failed_checks or 0} failed checks",
        )

    def start_step(self, canary: TrackStatus, step: int) -> None:
        weight = strategy_weight(self.isvc, step)
        updated = canary.model_copy(
            update={
                "step": step,
                "weight": weight,
                "step_started_at": self.now,
                "baseline": self.observed.canary_sample,
            }
        )
        self.plan.canary = updated
        self.plan.progress = self.step_progress(updated)
        strategy = self.isvc.spec.rollout.strategy
        if strategy == "Shadow":
            detail = f"mirroring {mirror_percent(self.isvc, updated)}% of requests"
        elif strategy == "ABTest":
            ab = self.isvc.spec.rollout.ab_test
            header = ab.header_name if ab else "?"
            detail = f"header {header} pinned, {weight}% of the rest"
        else:
            detail = f"weight {weight}%"
        self.event(
            False,
            reasons.STEP_STARTED,
            f"step {step + 1}/{len(self.isvc.spec.rollout.steps)} for version"
            f" {canary.version}: {detail}",
        )

    def analyse(self, canary: TrackStatus) -> None:
        spec = self.isvc.spec
        sample = self.observed.canary_sample
        # Only the router tells mirrored requests apart; elsewhere the candidate's own server
        # counts them, and they are judged as live ones, latency included.
        shadow = spec.rollout.strategy == "Shadow" and spec.traffic.mode == "router"
        mode: Literal["live", "shadow"] = "shadow" if shadow else "live"
        if sample is None:
            result = AnalysisResult(
                time=self.now,
                outcome="Held",
                message="the candidate's metrics could not be read: step held",
            )
        else:
            figures = interval_figures(canary.baseline, sample)
            result = analyse(
                spec.analysis, figures, mode=mode, queries=self.observed.queries, now=self.now
            )
        self.plan.analysis = result
        restarted = canary.model_copy(
            update={"last_analysis": result, "step_started_at": self.now, "baseline": sample}
        )
        self.plan.canary = restarted
        step = canary.step or 0
        if result.outcome == "Held":
            self.event(False, reasons.ANALYSIS_HELD, result.message or "held")
            self.plan.progress = self.step_progress(restarted)
            return
        if result.outcome == "Failed":
            failed = (canary.failed_checks or 0) + 1
            restarted = restarted.model_copy(update={"failed_checks": failed})
            self.plan.canary = restarted
            threshold = spec.analysis.failure_threshold
            self.event(
                True,
                reasons.ANALYSIS_FAILED,
                f"version {canary.version} step {step + 1}: {result.message}"
                f" ({failed}/{threshold} failed checks)",
            )
            if failed >= threshold:
                self.roll_back("RolledBack", result.message or "analysis failed")
            else:
                self.plan.progress = self.step_progress(restarted)
            return
        self.event(
            False,
            reasons.ANALYSIS_PASSED,
            f"version {canary.version} step {step + 1}: {_figures(result)}",
        )
        if spec.rollout.strategy == "ABTest":
            self.plan.progress = (
                reasons.AWAITING_PROMOTION,
                f"A/B test of version {canary.version} running: promote with mlcycle.dev/promote",
            )
            return
        if step + 1 >= len(spec.rollout.steps):
            self.promote(restarted)
            return
        self.start_step(restarted, step + 1)

    def promote(self, canary: TrackStatus) -> None:
        plan = self.plan
        if self.ready(canary.version) < full_replicas(self.isvc):
            if not canary.promoting:
                self.event(
                    False,
                    reasons.PROMOTING,
                    f"scaling version {canary.version} to {full_replicas(self.isvc)} replicas"
                    " before it takes all traffic",
                )
            plan.canary = canary.model_copy(update={"promoting": True})
            plan.phase = "Promoting"
            plan.progress = (reasons.PROMOTING, f"promoting version {canary.version}")
            return
        previous = plan.stable.version if plan.stable else None
        plan.history = [
            *plan.history,
            _record(canary, "Promoted", f"replaced version {previous}", self.now),
        ][-HISTORY_LIMIT:]
        plan.outcome = RolloutOutcome("Promoted", _duration(canary, self.now))
        plan.stable = TrackStatus(
            version=canary.version,
            model_uri=canary.model_uri,
            model_version=canary.model_version,
            weight=100,
            started_at=canary.started_at,
            last_analysis=canary.last_analysis,
        )
        plan.canary = None
        registry = self.isvc.spec.registry
        if registry is not None and (registry.tag_outcome or registry.promote_alias):
            plan.registry_writes.append(
                PendingRegistryWrite(
                    model_name=self.model_name,
                    version=str(canary.version),
                    tags={ROLLOUT_TAG: "promoted"} if registry.tag_outcome else {},
                    alias=registry.promote_alias,
                    decided_at=self.now,
                )
            )
        alias = registry.promote_alias if registry is not None else None
        moved = f"; alias {alias} moved to it" if alias else ""
        self.event(
            False,
            reasons.PROMOTED,
            f"version {canary.version} promoted to stable (was {previous}){moved}",
        )
        plan.phase = "Ready"
        plan.progress = (reasons.ROLLOUT_COMPLETE, f"version {canary.version} is stable")
        if self.ready(canary.version) <= 0:
            plan.phase = "Progressing"

    def roll_back(self, outcome: Literal["RolledBack", "Aborted"], reason: str) -> None:
        plan = self.plan
        canary = plan.canary
        assert canary is not None
        plan.history = [*plan.history, _record(canary, outcome, reason, self.now)][-HISTORY_LIMIT:]
        plan.outcome = RolloutOutcome(outcome, _duration(canary, self.now))
        plan.rejected = RejectedVersion(
            version=str(canary.version),
            generation=self.isvc.metadata.generation,
            reason=cap_message(reason),
        )
        registry = self.isvc.spec.registry
        if registry is None or registry.tag_outcome:
            plan.registry_writes.append(
                PendingRegistryWrite(
                    model_name=self.model_name,
                    version=str(canary.version),
                    tags=_failure_tags(reason),
                    decided_at=self.now,
                )
            )
        plan.canary = None
        stable = plan.stable.version if plan.stable else None
        self.event(
            True,
            reasons.ROLLED_BACK if outcome == "RolledBack" else reasons.ABORTED,
            f"version {canary.version} {'rolled back' if outcome == 'RolledBack' else 'aborted'}:"
            f" {reason}; all traffic on stable version {stable}",
        )
        plan.phase = "RolledBack"
        plan.progress = (reasons.ROLLED_BACK, f"version {canary.version}: {reason}")

    def end_canary(self, outcome: Literal["Aborted"], reason: str) -> None:
        """The spec no longer asks for the candidate: it goes without being rejected."""
        plan = self.plan
        canary = plan.canary
        assert canary is not None
        plan.history = [*plan.history, _record(canary, outcome, reason, self.now)][-HISTORY_LIMIT:]
        plan.outcome = RolloutOutcome(outcome, _duration(canary, self.now))
        plan.canary = None
        self.event(False, reasons.SUPERSEDED, f"rollout of version {canary.version}: {reason}")


def _figures(result: AnalysisResult) -> str:
    parts = [f"{result.requests} requests"]
    if result.success_rate is not None:
        parts.append(f"success rate {result.success_rate:.3f}")
    if result.latency_p99_ms is not None:
        parts.append(f"p99 {result.latency_p99_ms:.1f} ms")
    if result.shadow_agreement is not None:
        parts.append(f"agreement {result.shadow_agreement:.3f}")
    return ", ".join(parts)


def plan_rollout(isvc: InferenceService, observed: Observed, now: datetime.datetime) -> RolloutPlan:
    """One step of the state machine: same status and observation, same plan."""
    plan = _Pass(isvc, observed, now).run()
    before = (isvc.status or InferenceServiceStatus()).pending_registry_writes
    plan.pending_writes = queued(before, plan.registry_writes)
    return plan


def analysis_due(isvc: InferenceService, now: datetime.datetime) -> bool:
    """Whether this pass may start a step or analyse, so the router must be read."""
    canary = (isvc.status or InferenceServiceStatus()).canary
    if canary is None:
        return False
    if canary.step_started_at is None:
        return True
    interval = datetime.timedelta(seconds=duration_seconds(isvc.spec.rollout.interval))
    return now - canary.step_started_at >= interval


def seconds_to_next_decision(isvc: InferenceService, now: datetime.datetime) -> float | None:
    canary = (isvc.status or InferenceServiceStatus()).canary
    if canary is None or canary.step_started_at is None:
        return None
    interval = duration_seconds(isvc.spec.rollout.interval)
    return max(0.0, interval - (now - canary.step_started_at).total_seconds())


# --- Children of router mode --------------------------------------------------------------


def service_url(isvc: InferenceService) -> str | None:
    """Where clients call: the router's or the shared Service; in gateway-api mode the
    route's first hostname (none without one: the Gateway's address is the cluster's)."""
    gateway = isvc.spec.traffic.gateway
    if isvc.spec.traffic.mode == "gateway-api":
        return (
            f"http://{gateway.hostnames[0]}" if gateway is not None and gateway.hostnames else None
        )
    return f"http://{child_name(isvc)}.{isvc.metadata.namespace}.svc.cluster.local"


def _metadata(isvc: InferenceService, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": isvc.metadata.namespace,
        "labels": dict(labels),
        "ownerReferences": [controller_reference(isvc)],
    }


_POD_IP_ENV: Final = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
_NAMESPACE_ENV: Final = {
    "name": "POD_NAMESPACE",
    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
}


def _with_overlay(
    pod: dict[str, Any], container: dict[str, Any], template: WorkloadTemplate
) -> dict[str, Any]:
    """The user's env, resources and pod overlay laid over a container and its pod.

    Model servers and routers run mlcycle's own program, which writes only to /tmp: the
    root filesystem is read-only."""
    container["env"] = merged_env(container["env"], template)
    return with_workload(pod, container, template, read_only_root=True)


def server_deployment(
    isvc: InferenceService,
    track: TrackStatus,
    model_name: str,
    replicas: int | None,
    tracking_uri: str | None,
    image: str = DEFAULT_IMAGE,
    credentials_secret: str | None = None,
) -> dict[str, Any]:
    """The model server Deployment of one version; `replicas` None leaves them to the HPA.
    `credentials_secret` names the Secret of the pods' MLflow credentials."""
    version = str(track.version)
    labels = {**child_labels(isvc, MODEL_SERVER_COMPONENT), VERSION_LABEL: version}
    server = isvc.spec.server
    args = [
        "serve",
        f"--model-uri={track.model_uri}",
        f"--model-name={model_name}",
        f"--model-version={version}",
        # Pods share the node's ports on the local stack and a pod network elsewhere: the
        # pod's own address is right for both.
        "--host=$(POD_IP)",
        f"--port={SERVER_PORT}",
        f"--grpc-port={GRPC_PORT}",
    ]
    if server.batching is not None:
        args.append(f"--max-batch-size={server.batching.max_batch_size}")
        args.append(f"--max-batch-wait-ms={server.batching.max_latency_ms}")
        if server.batching.row_independent is not None:
            args.append(f"--row-independent={str(server.batching.row_independent).lower()}")
    env: list[dict[str, Any]] = [dict(_POD_IP_ENV)]
    if tracking_uri is not None:
        env.extend(mlflow_env(tracking_uri, credentials_secret))
    container: dict[str, Any] = {
        "name": "server",
        "image": server.image or image,
        "command": ["mlcycle"],
        "args": args,
        "env": env,
        "ports": [
            {"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"},
            {"name": GRPC_PORT_NAME, "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
    }
    # A model server never calls the Kubernetes API: no token to steal from it.
    pod = _with_overlay(
        {"automountServiceAccountToken": False, "containers": [container]}, container, server
    )
    spec: dict[str, Any] = {
        "selector": {"matchLabels": version_selector(isvc, version)},
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(isvc, version_name(isvc, version), labels),
        "spec": spec,
    }


def server_service(isvc: InferenceService, version: str) -> dict[str, Any]:
    labels = {**child_labels(isvc, MODEL_SERVER_COMPONENT), VERSION_LABEL: version}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(isvc, version_name(isvc, version), labels),
        "spec": {
            "selector": version_selector(isvc, version),
            "ports": service_ports(),
        },
    }


def server_autoscaler(isvc: InferenceService, version: str) -> dict[str, Any] | None:
    server = isvc.spec.server
    if server.min_replicas is None or server.max_replicas is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(isvc, child_name(isvc), child_labels(isvc, MODEL_SERVER_COMPONENT)),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": version_name(isvc, version),
            },
            "minReplicas": server.min_replicas,
            "maxReplicas": server.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


@dataclass(frozen=True)
class TrafficSplit:
    """How requests are split at this point of the rollout, whatever carries it out (the
    router's configuration, the HTTPRoute), so two modes never disagree on a step."""

    stable: str | None
    canary: str | None = None
    canary_weight: int = 0
    """The candidate's percent of requests not pinned by the header."""
    pin_header: tuple[str, str | None] | None = None
    """ABTest: (header, value) sending requests to the candidate; value None for any."""
    mirror_percent: int = 0
    """Shadow: the percent of requests copied to the candidate."""


def traffic_split(isvc: InferenceService, plan: RolloutPlan) -> TrafficSplit:
    """The candidate gets traffic only once its step has started (it is ready)."""
    stable = plan.stable.version if plan.stable is not None else None
    canary = plan.canary
    if canary is None or canary.version is None:
        return TrafficSplit(stable)
    if canary.step_started_at is None:
        return TrafficSplit(stable, canary.version)
    ab = isvc.spec.rollout.ab_test
    pin = (
        (ab.header_name, ab.header_value)
        if isvc.spec.rollout.strategy == "ABTest" and ab is not None
        else None
    )
    return TrafficSplit(
        stable,
        canary.version,
        canary_weight=canary.weight or 0,
        pin_header=pin,
        mirror_percent=mirror_percent(isvc, canary),
    )


def router_config(isvc: InferenceService, plan: RolloutPlan) -> RouterConfig:
    """Backends are the tracks; each names its version's Service and version label."""
    split = traffic_split(isvc, plan)
    backends: dict[str, dict[str, Any]] = {}
    weights: dict[str, int] = {}
    if split.stable is not None:
        backends["stable"] = _backend(isvc, split.stable)
        weights["stable"] = 100 - split.canary_weight
    if split.canary is not None:
        backends["canary"] = _backend(isvc, split.canary)
        weights["canary"] = split.canary_weight
    document: dict[str, Any] = {
        "service": str(isvc.metadata.name),
        "backends": backends,
        "weights": weights,
        "headerRoutes": [],
    }
    if split.pin_header is not None:
        header, value = split.pin_header
        route: dict[str, Any] = {"header": header, "backend": "canary"}
        if value is not None:
            route["value"] = value
        document["headerRoutes"].append(route)
    if split.mirror_percent > 0:
        document["shadow"] = {"backend": "canary", "percent": split.mirror_percent}
    return RouterConfig.model_validate(document)


def _backend(isvc: InferenceService, version: str) -> dict[str, Any]:
    return {
        "service": version_name(isvc, version),
        "port": "http",
        "grpcPort": GRPC_PORT_NAME,
        "version": version,
    }


def router_configmap(isvc: InferenceService, config: RouterConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(isvc, router_name(isvc), child_labels(isvc, ROUTER_COMPONENT)),
        "data": {DEFAULT_CONFIGMAP_KEY: config.to_json()},
    }


def router_deployment(isvc: InferenceService, image: str = DEFAULT_IMAGE) -> dict[str, Any]:
    router = isvc.spec.traffic.router
    labels = child_labels(isvc, ROUTER_COMPONENT)
    name = router_name(isvc)
    container: dict[str, Any] = {
        "name": "router",
        "image": router.image or image,
        "command": ["mlcycle"],
        "args": [
            "router",
            f"--configmap={name}",
            "--namespace=$(POD_NAMESPACE)",
            "--host=$(POD_IP)",
            f"--port={ROUTER_PORT}",
            f"--grpc-port={GRPC_PORT}",
            "--admin-host=$(POD_IP)",
            f"--admin-port={ROUTER_ADMIN_PORT}",
        ],
        "env": [dict(_POD_IP_ENV), dict(_NAMESPACE_ENV)],
        "ports": [
            {"name": "http", "containerPort": ROUTER_PORT, "protocol": "TCP"},
            {"name": GRPC_PORT_NAME, "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": ROUTER_ADMIN_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "admin"},
            "periodSeconds": 2,
        },
    }
    pod = _with_overlay({"serviceAccountName": name, "containers": [container]}, container, router)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(isvc, name, labels),
        "spec": {
            "replicas": router.replicas,
            "selector": {"matchLabels": router_selector(isvc)},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def router_service(isvc: InferenceService) -> dict[str, Any]:
    """The InferenceService's address (`status.url`)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(isvc, child_name(isvc), child_labels(isvc, ROUTER_COMPONENT)),
        "spec": {
            "selector": router_selector(isvc),
            "ports": service_ports(),
        },
    }


def router_access(isvc: InferenceService) -> list[dict[str, Any]]:
    """The router reads its ConfigMap and its backends' EndpointSlices, nothing else: a
    ServiceAccount per InferenceService with a Role limited to that."""
    name = router_name(isvc)
    labels = child_labels(isvc, ROUTER_COMPONENT)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(isvc, name, labels)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(isvc, name, labels),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [name],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(isvc, name, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [
                {"kind": "ServiceAccount", "name": name, "namespace": isvc.metadata.namespace}
            ],
        },
    ]


def server_children(
    isvc: InferenceService,
    plan: RolloutPlan,
    model_name: str,
    tracking_uri: str | None,
    image: str = DEFAULT_IMAGE,
    credentials_secret: str | None = None,
) -> list[dict[str, Any]]:
    """Deployment and Service of every version the plan serves, and the stable's HPA."""
    replicas = desired_replicas(isvc, plan)
    autoscaled = isvc.spec.server.min_replicas is not None
    children: list[dict[str, Any]] = []
    for track in (plan.stable, plan.canary):
        if track is None or track.version is None:
            continue
        is_stable = track is plan.stable
        count = None if autoscaled and is_stable else replicas.get(track.version)
        children.append(server_service(isvc, track.version))
        children.append(
            server_deployment(
                isvc, track, model_name, count, tracking_uri, image, credentials_secret
            )
        )
    if plan.stable is not None and plan.stable.version is not None:
        autoscaler = server_autoscaler(isvc, plan.stable.version)
        if autoscaler is not None:
            children.append(autoscaler)
    return children


def router_children(
    isvc: InferenceService, plan: RolloutPlan, image: str = DEFAULT_IMAGE
) -> list[dict[str, Any]]:
    """Traffic layer of mode `router`: RBAC, router Deployment and Service, then the
    ConfigMap last so weights move only after the backends they name exist."""
    return [
        *router_access(isvc),
        router_service(isvc),
        router_deployment(isvc, image),
        router_configmap(isvc, router_config(isvc, plan)),
    ]


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """Identifies what was applied, so an unchanged child is not sent again every tick."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def versions_served(plan: RolloutPlan) -> set[str]:
    return {
        track.version
        for track in (plan.stable, plan.canary)
        if track is not None and track.version is not None
    }


def stale_server_children(
    deployments: Sequence[Mapping[str, Any]], plan: RolloutPlan
) -> list[tuple[str, str]]:
    """(kind, name) of server Deployments and Services whose version is no longer served."""
    keep = versions_served(plan)
    stale: list[tuple[str, str]] = []
    for deployment in deployments:
        metadata = deployment.get("metadata") or {}
        labels = metadata.get("labels") or {}
        if labels.get(COMPONENT_LABEL) != MODEL_SERVER_COMPONENT:
            continue
        if labels.get(VERSION_LABEL) in keep:
            continue
        stale.append(("Deployment", str(metadata.get("name"))))
        stale.append(("Service", str(metadata.get("name"))))
    return stale


def ready_replicas(deployments: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Ready pods per version, from the server Deployments' status."""
    found: dict[str, int] = {}
    for deployment in deployments:
        labels = (deployment.get("metadata") or {}).get("labels") or {}
        if labels.get(COMPONENT_LABEL) != MODEL_SERVER_COMPONENT or VERSION_LABEL not in labels:
            continue
        status = deployment.get("status") or {}
        found[str(labels[VERSION_LABEL])] = int(status.get("readyReplicas") or 0)
    return found


def router_ready(deployments: Sequence[Mapping[str, Any]]) -> int:
    for deployment in deployments:
        labels = (deployment.get("metadata") or {}).get("labels") or {}
        if labels.get(COMPONENT_LABEL) == ROUTER_COMPONENT:
            return int((deployment.get("status") or {}).get("readyReplicas") or 0)
    return 0


def router_pod_addresses(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """`ip:admin-port` of the router pods that are running, to read their metrics."""
    return _pod_addresses(pods, ROUTER_COMPONENT, None, ROUTER_ADMIN_PORT)


def server_pod_addresses(pods: Sequence[Mapping[str, Any]], version: str) -> list[str]:
    """`ip:port` of the running model server pods of `version` (metrics on the serving port)."""
    return _pod_addresses(pods, MODEL_SERVER_COMPONENT, version, SERVER_PORT)


def _pod_addresses(
    pods: Sequence[Mapping[str, Any]], component: str, version: str | None, port: int
) -> list[str]:
    addresses = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        status = pod.get("status") or {}
        if labels.get(COMPONENT_LABEL) != component or status.get("phase") != "Running":
            continue
        if version is not None and labels.get(VERSION_LABEL) != version:
            continue
        if status.get("podIP") and not metadata.get("deletionTimestamp"):
            addresses.append(f"{status['podIP']}:{port}")
    return sorted(addresses)


# --- Status -------------------------------------------------------------------------------


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


def _replica_weights(
    stable: TrackStatus | None, canary: TrackStatus | None
) -> tuple[TrackStatus | None, TrackStatus | None]:
    """replicas mode: the weights the ready pods give, not the ones asked for."""
    if stable is None or canary is None:
        return stable, canary
    weight = effective_weight(stable.ready_replicas or 0, canary.ready_replicas or 0)
    return (
        stable.model_copy(update={"weight": 100 - weight}),
        canary.model_copy(update={"weight": weight}),
    )


def _traffic_message(
    isvc: InferenceService, observed: Observed, stable: TrackStatus | None, traffic: bool
) -> str:
    version = stable.version if stable else "?"
    ready = stable.ready_replicas or 0 if stable else 0
    mode = isvc.spec.traffic.mode
    if mode == "router":
        if traffic:
            return f"router and version {version} answer requests"
        return f"{observed.router_ready} router pods ready, {ready} stable pods ready"
    entry = (
        f"HTTPRoute {child_name(isvc)}" if mode == "gateway-api" else f"Service {child_name(isvc)}"
    )
    if traffic:
        return f"version {version} answers requests through {entry}"
    return f"{ready} stable pods ready behind {entry}"


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
    replicas = desired_replicas(isvc, plan)
    stable = _track_with_replicas(plan.stable, observed, replicas)
    canary = _track_with_replicas(plan.canary, observed, replicas)
    if isvc.spec.traffic.mode == "replicas":
        stable, canary = _replica_weights(stable, canary)
    serving = stable is not None and (stable.ready_replicas or 0) > 0
    traffic = serving and entry_ready(isvc, observed)
    conditions.put(
        reasons.TRAFFIC_AVAILABLE,
        traffic,
        reasons.SERVING if traffic else reasons.NOT_SERVING,
        _traffic_message(isvc, observed, stable, traffic),
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


def merge_patch(recorded: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired` as a JSON merge patch over `recorded`: a merge patch keeps whatever it does
    not mention, so a field gone (a finished canary, a cleared baseline) is sent as null."""
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = recorded.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            patch[key] = merge_patch(old, value)
        else:
            patch[key] = value
    for key in recorded:
        if key not in desired:
            patch[key] = None
    return patch
