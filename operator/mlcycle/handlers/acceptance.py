"""Recording whether an object's spec is acceptable, for every kind."""

from __future__ import annotations

import datetime

import kopf

from mlcycle.api.v1alpha1 import CustomResource
from mlcycle.plan.conditions import status_changed
from mlcycle.reconcile.acceptance import reconcile_acceptance


def record_acceptance(kind: type[CustomResource], body: kopf.Body, patch: kopf.Patch) -> None:
    plan = reconcile_acceptance(kind, body, now=datetime.datetime.now(datetime.UTC))
    if status_changed(dict(body.get("status") or {}), plan.status_patch):
        patch.status.update(plan.status_patch)
    if plan.event is not None:
        kopf.event(body, type=plan.event.type, reason=plan.event.reason, message=plan.event.message)
