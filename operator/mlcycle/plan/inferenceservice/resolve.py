"""Which registry version an InferenceService serves: its `Target`, or why none can be
served (`Blocked`), from a ModelVersion or the registry, behind the approval gate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlcycle.api.v1alpha1.inferenceservice import InferenceService
from mlcycle.api.v1alpha1.modelversion import ModelVersion
from mlcycle.plan import reasons
from mlcycle.plan.approval import is_approved, requires_approval


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
