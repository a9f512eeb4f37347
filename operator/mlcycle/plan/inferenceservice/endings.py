"""How a rollout ends: promotion, rollback or abort, and the candidate no longer asked
for; each leaves a history record, and promotion and rollback a registry write-back."""

from __future__ import annotations

import datetime
from typing import Final, Literal

from mlcycle.api.v1alpha1.inferenceservice import (
    PendingRegistryWrite,
    RejectedVersion,
    RolloutRecord,
    TrackStatus,
)
from mlcycle.plan import reasons
from mlcycle.plan.conditions import cap_message
from mlcycle.plan.inferenceservice.decision import RolloutDecision, RolloutOutcome
from mlcycle.plan.inferenceservice.servers import full_replicas

HISTORY_LIMIT: Final = 20
ROLLOUT_TAG: Final = "rollout"
ROLLOUT_REASON_TAG: Final = "rollout.reason"


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


def promote(decision: RolloutDecision, canary: TrackStatus) -> None:
    """The candidate becomes stable once it runs at full size (Promoting until then)."""
    plan = decision.plan
    if decision.ready(canary.version) < full_replicas(decision.isvc):
        if not canary.promoting:
            decision.event(
                False,
                reasons.PROMOTING,
                f"scaling version {canary.version} to {full_replicas(decision.isvc)} replicas"
                " before it takes all traffic",
            )
        plan.canary = canary.model_copy(update={"promoting": True})
        plan.phase = "Promoting"
        plan.progress = (reasons.PROMOTING, f"promoting version {canary.version}")
        return
    previous = plan.stable.version if plan.stable else None
    plan.history = [
        *plan.history,
        _record(canary, "Promoted", f"replaced version {previous}", decision.now),
    ][-HISTORY_LIMIT:]
    plan.outcome = RolloutOutcome("Promoted", _duration(canary, decision.now))
    plan.stable = TrackStatus(
        version=canary.version,
        model_uri=canary.model_uri,
        model_version=canary.model_version,
        weight=100,
        started_at=canary.started_at,
        last_analysis=canary.last_analysis,
    )
    plan.canary = None
    registry = decision.isvc.spec.registry
    if registry is not None and (registry.tag_outcome or registry.promote_alias):
        plan.registry_writes.append(
            PendingRegistryWrite(
                model_name=decision.model_name,
                version=str(canary.version),
                tags={ROLLOUT_TAG: "promoted"} if registry.tag_outcome else {},
                alias=registry.promote_alias,
                decided_at=decision.now,
            )
        )
    alias = registry.promote_alias if registry is not None else None
    moved = f"; alias {alias} moved to it" if alias else ""
    decision.event(
        False,
        reasons.PROMOTED,
        f"version {canary.version} promoted to stable (was {previous}){moved}",
    )
    plan.phase = "Ready"
    plan.progress = (reasons.ROLLOUT_COMPLETE, f"version {canary.version} is stable")
    if decision.ready(canary.version) <= 0:
        plan.phase = "Progressing"


def roll_back(
    decision: RolloutDecision, outcome: Literal["RolledBack", "Aborted"], reason: str
) -> None:
    """All traffic back on stable at once; the candidate is rejected until asked for anew."""
    plan = decision.plan
    canary = plan.canary
    assert canary is not None
    plan.history = [*plan.history, _record(canary, outcome, reason, decision.now)][-HISTORY_LIMIT:]
    plan.outcome = RolloutOutcome(outcome, _duration(canary, decision.now))
    plan.rejected = RejectedVersion(
        version=str(canary.version),
        generation=decision.isvc.metadata.generation,
        reason=cap_message(reason),
    )
    registry = decision.isvc.spec.registry
    if registry is None or registry.tag_outcome:
        plan.registry_writes.append(
            PendingRegistryWrite(
                model_name=decision.model_name,
                version=str(canary.version),
                tags=_failure_tags(reason),
                decided_at=decision.now,
            )
        )
    plan.canary = None
    stable = plan.stable.version if plan.stable else None
    decision.event(
        True,
        reasons.ROLLED_BACK if outcome == "RolledBack" else reasons.ABORTED,
        f"version {canary.version} {'rolled back' if outcome == 'RolledBack' else 'aborted'}:"
        f" {reason}; all traffic on stable version {stable}",
    )
    plan.phase = "RolledBack"
    plan.progress = (reasons.ROLLED_BACK, f"version {canary.version}: {reason}")


def end_canary(decision: RolloutDecision, outcome: Literal["Aborted"], reason: str) -> None:
    """The spec no longer asks for the candidate: it goes without being rejected."""
    plan = decision.plan
    canary = plan.canary
    assert canary is not None
    plan.history = [*plan.history, _record(canary, outcome, reason, decision.now)][-HISTORY_LIMIT:]
    plan.outcome = RolloutOutcome(outcome, _duration(canary, decision.now))
    plan.canary = None
    decision.event(False, reasons.SUPERSEDED, f"rollout of version {canary.version}: {reason}")
