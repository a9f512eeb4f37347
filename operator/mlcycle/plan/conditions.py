"""Conditions keyed by type, in the Kubernetes API conventions' style."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from mlcycle.api.v1alpha1.common import Condition


def set_condition(
    conditions: Sequence[Condition],
    *,
    type_: str,
    status: str,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: datetime.datetime,
) -> list[Condition]:
    """Replace the condition of `type_`; its transition time moves only when status moves."""
    previous = next((c for c in conditions if c.type == type_), None)
    transition = now
    if previous is not None and previous.status == status and previous.last_transition_time:
        transition = previous.last_transition_time
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:1024],
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
    kept = [c for c in conditions if c.type != type_]
    return sorted([*kept, updated], key=lambda c: c.type)


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def status_changed(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """Status is written only when it differs, so a resync never bumps resourceVersion."""
    current = current or {}
    return any(current.get(key) != value for key, value in desired.items())
