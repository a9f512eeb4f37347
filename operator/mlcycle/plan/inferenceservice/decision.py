"""What one rollout pass decides (`RolloutPlan`) and the pass itself while it decides
(`RolloutDecision`): the object, the observation and the clock it was given, the plan it
writes, the Events it records and the action annotations it takes."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Literal

from mlcycle.api.v1alpha1.inferenceservice import (
    AnalysisResult,
    InferenceService,
    InferenceServicePhase,
    InferenceServiceStatus,
    PendingRegistryWrite,
    RejectedVersion,
    RolloutRecord,
    TrackStatus,
)
from mlcycle.plan import reasons
from mlcycle.plan.conditions import EventIntent, cap_message
from mlcycle.plan.inferenceservice.observe import Observed


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


class RolloutDecision:
    """One pass of the rollout state machine in progress, over a copy of the status."""

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

    def ready(self, version: str | None) -> int:
        """Ready pods of `version`'s Deployment."""
        return self.observed.ready_replicas.get(version or "", 0)
