"""The ModelVersion's status for what one reconcile established, with Events for what
changed, and the backoff while MLflow cannot be reached."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Final

from mlcycle.api.v1alpha1.modelversion import (
    ModelSignature,
    ModelVersion,
    ModelVersionPhase,
    ModelVersionStatus,
)
from mlcycle.plan import reasons
from mlcycle.plan.approval import approval_status, is_approved
from mlcycle.plan.backoff import backoff_seconds
from mlcycle.plan.conditions import (
    ConditionSet,
    EventIntent,
    StatusPlan,
    cap_message,
    find_condition,
    status_changed,
)
from mlcycle.plan.modelversion.aliases import AliasPlan
from mlcycle.plan.modelversion.source import ResolvedSource, SourceBlocked
from mlcycle.plan.modelversion.version import model_uri

HISTORY_LIMIT: Final = 50

_WAITING_REASONS: Final = frozenset(
    {reasons.WAITING_FOR_TRAINING_JOB, reasons.WAITING_FOR_RUN, reasons.REGISTERING}
)


def backing_off(status: ModelVersionStatus | None, now: datetime.datetime) -> float | None:
    """Seconds left before MLflow may be called again, when backing off."""
    if status is None or status.next_attempt_time is None:
        return None
    left = (status.next_attempt_time - now).total_seconds()
    return left if left > 0 else None


@dataclass(frozen=True)
class Progress:
    """What one reconcile established; `status_plan` turns it into status and Events."""

    phase: ModelVersionPhase
    registered: tuple[bool, str, str] | None = None
    """(status, reason, message) of the Registered condition."""
    source: ResolvedSource | None = None
    source_blocked: SourceBlocked | None = None
    version: str | None = None
    signature: ModelSignature | None = None
    signature_read: tuple[bool, str, str] | None = None
    """(status, reason, message) of the SignatureRead condition, when a read was tried."""
    aliases: AliasPlan | None = None
    events: list[EventIntent] = field(default_factory=list)
    retry_count: int | None = None
    next_attempt_time: datetime.datetime | None = None


def _recorded(status: ModelVersionStatus) -> dict[str, Any]:
    dumped: dict[str, Any] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


_CLEARABLE: Final = ("retryCount", "nextAttemptTime")


def _transition_event(
    before: ModelVersionStatus, conditions: ConditionSet, type_: str
) -> EventIntent | None:
    """An Event when a condition appears or its status or reason moves."""
    old = find_condition(before.conditions, type_)
    new = find_condition(conditions.conditions, type_)
    if new is None or (old is not None and (old.status, old.reason) == (new.status, new.reason)):
        return None
    normal = new.status == "True" or new.reason in _WAITING_REASONS
    return EventIntent("Normal" if normal else "Warning", new.reason, cap_message(new.message))


def _alias_condition(mv: ModelVersion, plan: AliasPlan) -> tuple[bool, str, str]:
    if plan.conflicts:
        owners = ", ".join(
            f"{alias} (owned by {owner.kind} {owner.namespace}/{owner.name})"
            for alias, owner in sorted(plan.conflicts.items())
        )
        return False, reasons.ALIAS_CONFLICT, f"aliases claimed by another object: {owners}"
    if mv.spec.aliases and not is_approved(mv):
        return False, reasons.AWAITING_APPROVAL, "aliases are set once the version is approved"
    if plan.superseded:
        newer = ", ".join(
            f"{alias} (followed to newer ModelVersion {owner.namespace}/{owner.name})"
            for alias, owner in sorted(plan.superseded.items())
        )
        held = f"; holds {', '.join(plan.held)}" if plan.held else ""
        return True, reasons.ALIAS_SUPERSEDED, f"aliases moved on: {newer}{held}"
    held = ", ".join(plan.held) or "none declared"
    return True, reasons.ALIASES_SET, f"aliases: {held}"


def signature_settled(status: ModelVersionStatus) -> bool:
    """Read once for good: found, or the model has none. A failed read is tried again."""
    read = find_condition(status.conditions, reasons.SIGNATURE_READ)
    return status.signature is not None or (read is not None and read.status == "True")


def status_plan(mv: ModelVersion, progress: Progress, now: datetime.datetime) -> StatusPlan:
    """The status for what this reconcile established, Events for what changed."""
    before = mv.status or ModelVersionStatus()
    conditions = ConditionSet(before.conditions, mv.metadata.generation, now)
    # Parsed into the typed model, so the spec is one the operator acts on (an invalid one
    # never gets here: the handler records InvalidSpec instead).
    conditions.put(reasons.ACCEPTED, True, reasons.SPEC_VALID, "spec accepted")
    if progress.source_blocked is not None:
        blocked = progress.source_blocked
        conditions.put(reasons.SOURCE_READY, False, blocked.reason, blocked.message)
    elif progress.source is not None:
        conditions.put(
            reasons.SOURCE_READY, True, reasons.SOURCE_RESOLVED, f"source {progress.source.uri}"
        )
    if progress.registered is not None:
        conditions.put(reasons.REGISTERED, *progress.registered)
    approval = approval_status(mv, before.approval, now)
    if mv.spec.approval is not None and mv.spec.approval.required:
        if approval.approved:
            conditions.put(
                reasons.APPROVED, True, reasons.APPROVED, f"approved by {approval.approved_by}"
            )
        else:
            conditions.put(
                reasons.APPROVED,
                False,
                reasons.AWAITING_APPROVAL,
                "set spec.approval.approvedBy to approve this version",
            )
    if progress.aliases is not None:
        conditions.put(reasons.ALIASES_SYNCED, *_alias_condition(mv, progress.aliases))
    if progress.signature_read is not None:
        conditions.put(reasons.SIGNATURE_READ, *progress.signature_read)
    ready = progress.phase == "Ready"
    conditions.put(
        reasons.READY,
        ready,
        reasons.VERSION_READY if ready else progress.phase,
        f"version {progress.version} is READY in MLflow" if ready else f"phase {progress.phase}",
    )
    version = progress.version or before.version
    history = [*before.alias_history]
    if progress.aliases is not None:
        history = [*history, *progress.aliases.moves][-HISTORY_LIMIT:]
    status = before.model_copy(
        update={
            "observed_generation": mv.metadata.generation,
            "phase": progress.phase,
            "conditions": conditions.conditions,
            "version": version,
            "model_uri": model_uri(mv.spec.model_name, version) if version else None,
            "source": progress.source.uri if progress.source else before.source,
            "signature": progress.signature or before.signature,
            "approval": approval,
            "lineage": progress.source.lineage if progress.source else before.lineage,
            "aliases": progress.aliases.held if progress.aliases else before.aliases,
            "alias_history": history,
            "retry_count": progress.retry_count,
            "next_attempt_time": progress.next_attempt_time,
        }
    )
    recorded = _recorded(before)
    desired = _recorded(status)
    for key in _CLEARABLE:
        if key not in desired and key in recorded:
            desired[key] = None
    events = list(progress.events)
    for type_ in (
        reasons.ACCEPTED,
        reasons.SOURCE_READY,
        reasons.REGISTERED,
        reasons.APPROVED,
        reasons.ALIASES_SYNCED,
        reasons.SIGNATURE_READ,
    ):
        event = _transition_event(before, conditions, type_)
        if event is not None:
            events.append(event)
    if progress.aliases is not None:
        events.extend(progress.aliases.events)
    return StatusPlan(desired, events, status_changed(recorded, desired))


def unavailable_progress(
    mv: ModelVersion, reason: str, message: str, now: datetime.datetime, jitter: float
) -> tuple[Progress, float]:
    """MLflow could not be reached (or refused): keep the phase, count the attempt, and
    schedule the next one with backoff; the delay is returned for kopf's retry."""
    before = mv.status or ModelVersionStatus()
    retries = (before.retry_count or 0) + 1
    delay = backoff_seconds(retries, jitter)
    phase: ModelVersionPhase = before.phase or "Pending"
    if reason == reasons.MLFLOW_REJECTED and before.phase != "Ready":
        phase = "Failed"
    progress = Progress(
        phase=phase,
        registered=(False, reason, message),
        version=before.version,
        retry_count=retries,
        next_attempt_time=now + datetime.timedelta(seconds=delay),
    )
    return progress, delay
