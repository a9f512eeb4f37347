"""Observe an object's spec and recorded status, and plan its acceptance status."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from mlcycle.api.v1alpha1 import CustomResource
from mlcycle.api.v1alpha1.common import Condition
from mlcycle.plan.acceptance import AcceptancePlan, plan_acceptance


def _recorded_conditions(status: Mapping[str, Any]) -> list[Condition]:
    recorded = []
    for raw in status.get("conditions") or []:
        try:
            recorded.append(Condition.model_validate(raw))
        except ValidationError:
            continue  # a hand-edited condition is replaced, not fatal
    return recorded


def spec_error_summary(error: ValidationError, limit: int = 3) -> str:
    """kubectl-sized: the first few field paths and messages, never the values themselves."""
    parts = [
        f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()[:limit]
    ]
    more = error.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def reconcile_acceptance(
    kind: type[CustomResource], body: Mapping[str, Any], now: datetime.datetime
) -> AcceptancePlan:
    spec_error = None
    try:
        kind.from_body(body)
    except ValidationError as error:
        spec_error = spec_error_summary(error)
    status = body.get("status") or {}
    return plan_acceptance(
        generation=int(body["metadata"].get("generation", 1)),
        conditions=_recorded_conditions(status),
        phase=status.get("phase"),
        initial_phase=kind.initial_phase(),
        spec_error=spec_error,
        now=now,
    )
