"""The model servers' batching flags as rendered from spec.server.batching."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from mlcycle.api.v1alpha1 import InferenceService
from mlcycle.plan.inferenceservice.observe import Observed
from mlcycle.plan.inferenceservice.resolve import Target
from mlcycle.plan.inferenceservice.rollout import plan_rollout
from mlcycle.plan.inferenceservice.servers import server_children

pytestmark = pytest.mark.unit


def _server_args(batching: dict[str, Any] | None) -> list[str]:
    spec: dict[str, Any] = {"model": {"name": "iris", "version": 1}}
    if batching is not None:
        spec["server"] = {"batching": batching}
    isvc = InferenceService.model_validate(
        {"metadata": {"name": "iris", "namespace": "a", "uid": "u", "generation": 1}, "spec": spec}
    )
    observed = Observed(target=Target("iris", "1"), ready_replicas={"1": 1})
    plan = plan_rollout(isvc, observed, datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    (deployment,) = [
        c for c in server_children(isvc, plan, "iris", None) if c["kind"] == "Deployment"
    ]
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_row_independence_is_passed_only_when_the_user_declares_it() -> None:
    assert not any(a.startswith("--row-independent") for a in _server_args(None))
    assert not any(a.startswith("--row-independent") for a in _server_args({"maxBatchSize": 8}))
    assert "--row-independent=true" in _server_args({"rowIndependent": True})
    assert "--row-independent=false" in _server_args({"rowIndependent": False})
