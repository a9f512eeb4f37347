"""Approval of a model version: whether a person must approve it before it is served or
given an alias, whether one has, and who did and when."""

from __future__ import annotations

import datetime
from typing import Final

from mlcycle.api.v1alpha1.modelversion import ApprovalStatus, ModelVersion

APPROVAL_REQUIRED_TAG: Final = "mlcycle.dev/approval-required"
"""On a version registered with `approval.required`, in the create request itself: the
version keeps requiring approval wherever it is served from, whatever becomes of the
object."""


def requires_approval(mv: ModelVersion) -> bool:
    return mv.spec.approval is not None and mv.spec.approval.required


def is_approved(mv: ModelVersion) -> bool:
    approval = mv.spec.approval
    return approval is None or not approval.required or approval.approved_by is not None


def approval_status(
    mv: ModelVersion, recorded: ApprovalStatus | None, now: datetime.datetime
) -> ApprovalStatus:
    """Who approved and when: the spec's `approvedAt`, else when the operator first saw
    this approver's approval (kept from status, so a resync does not move it)."""
    approval = mv.spec.approval
    if approval is None or not approval.required:
        return ApprovalStatus(approved=True)
    if approval.approved_by is None:
        return ApprovalStatus(approved=False)
    seen = (
        recorded.approved_at
        if recorded is not None and recorded.approved_by == approval.approved_by
        else None
    )
    return ApprovalStatus(
        approved=True,
        approved_by=approval.approved_by,
        approved_at=approval.approved_at or seen or now,
    )
