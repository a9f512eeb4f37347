"""The first decision for every object: is its spec one we can act on?"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlcycle.api.v1alpha1.common import Condition
from mlcycle.plan import reasons
from mlcycle.plan.conditions import EventIntent, find_condition, set_condition

__all__ = ["AcceptancePlan", "EventIntent", "plan_acceptance"]


@dataclass(frozen=True)
class AcceptancePlan:
    status_patch: dict[str, Any]
    event: EventIntent | None


def plan_acceptance(
    *,
    generation: int,
    conditions: Sequence[Condition],
    phase: str | None,
    initial_phase: str,
    spec_error: str | None,
    now: datetime.datetime,
) -> AcceptancePlan:
    """Record that `generation` was observed, and whether its spec is acceptable.

    An invalid spec becomes a condition, never an exception: raising would make kopf retry
    an object that cannot succeed until someone edits it.
    """
    accepted = spec_error is None
    status = "True" if accepted else "False"
    reason = reasons.SPEC_VALID if accepted else reasons.INVALID_SPEC
    message = "spec accepted" if accepted else f"spec rejected: {spec_error}"
    previous = find_condition(conditions, reasons.ACCEPTED)
    updated = set_condition(
        conditions,
        type_=reasons.ACCEPTED,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        now=now,
    )
    status_patch: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": [
            c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in updated
        ],
    }
    if phase is None:
        status_patch["phase"] = initial_phase if accepted else "Failed"
    transitioned = previous is None or previous.status != status or previous.reason != reason
    event = None
    if transitioned:
        event = EventIntent("Normal" if accepted else "Warning", reason, message)
    return AcceptancePlan(status_patch=status_patch, event=event)
