"""The traffic layer of each mode driven by the rollout plan: the HTTPRoute and the router
agree on every step, replicas mode splits by pod counts and reports the weight the ready
pods give, and the spec rules that keep each mode to what it can do."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from mlcycle.api.v1alpha1 import InferenceService
from mlcycle.plan import reasons
from mlcycle.plan.inferenceservice import (
    Observed,
    Target,
    desired_replicas,
    plan_rollout,
    router_config,
    service_url,
    status_plan,
    traffic_split,
)
from mlcycle.plan.serving_names import COMPONENT_LABEL, MODEL_SERVER_COMPONENT
from mlcycle.plan.traffic import traffic_children

pytestmark = pytest.mark.unit

T0 = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
GATEWAY = {"parentRef": {"name": "public", "namespace": "infra"}, "hostnames": ["iris.example"]}


def _isvc(traffic: dict[str, Any], status: dict[str, Any] | None = None, **spec: Any) -> Any:
    body: dict[str, Any] = {
        "metadata": {"name": "iris", "namespace": "team-a", "uid": "uid-1", "generation": 1},
        "spec": {
            "model": {"name": "iris", "version": 2},
            "server": {"replicas": 4},
            "traffic": traffic,
            "rollout": {"steps": [25, 50], "interval": "1m"},
            **spec,
        },
    }
    if status is not None:
        body["status"] = status
    return InferenceService.model_validate(body)


def _status(step_started: bool, weight: int = 25, **canary: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"version": "2", "modelUri": "models:/iris/2", "weight": weight}
    fields.update(step=0, startedAt=T0.isoformat(), failedChecks=0, **canary)
    if step_started:
        fields["stepStartedAt"] = T0.isoformat()
    return {
        "modelName": "iris",
        "stable": {"version": "1", "modelUri": "models:/iris/1", "weight": 100},
        "canary": fields,
    }


def _observed(ready: dict[str, int], router_ready: int = 0) -> Observed:
    return Observed(target=Target("iris", "2"), ready_replicas=ready, router_ready=router_ready)


def _plan(isvc: Any, ready: dict[str, int], router_ready: int = 0) -> Any:
    return plan_rollout(isvc, _observed(ready, router_ready), T0 + datetime.timedelta(seconds=5))


def test_gateway_route_carries_the_same_split_as_the_router() -> None:
    for strategy, extra in (
        ("Canary", {}),
        ("ABTest", {"abTest": {"headerName": "x-variant", "headerValue": "b", "weight": 10}}),
        ("Shadow", {}),
    ):
        rollout = {"strategy": strategy, "steps": [25, 50], "interval": "1m", **extra}
        weight = 10 if strategy == "ABTest" else (25 if strategy == "Canary" else 0)
        isvc = _isvc(
            {"mode": "gateway-api", "gateway": GATEWAY},
            _status(step_started=True, weight=weight),
            rollout=rollout,
        )
        plan = _plan(isvc, {"1": 4, "2": 1})
        [route] = traffic_children(isvc, plan)
        split_rule = route["spec"]["rules"][-1]
        weights = {ref["name"]: ref["weight"] for ref in split_rule["backendRefs"]}
        router = router_config(isvc, plan)
        assert weights == {"iris-v1": router.weights["stable"], "iris-v2": router.weights["canary"]}
        assert all(ref["port"] == 80 for ref in split_rule["backendRefs"])
        if strategy == "ABTest":
            pin = route["spec"]["rules"][0]
            assert pin["matches"][0]["headers"] == [
                {"type": "Exact", "name": "x-variant", "value": "b"}
            ]
            assert pin["backendRefs"][0]["name"] == "iris-v2"
        if strategy == "Shadow":
            [mirror] = split_rule["filters"]
            assert mirror["requestMirror"]["percent"] == 25
            assert mirror["requestMirror"]["backendRef"]["name"] == "iris-v2"


def test_a_candidate_gets_no_route_weight_before_its_step_starts() -> None:
    isvc = _isvc({"mode": "gateway-api", "gateway": GATEWAY}, _status(step_started=False))
    plan = _plan(isvc, {"1": 4, "2": 0})
    assert traffic_split(isvc, plan).canary_weight == 0
    [route] = traffic_children(isvc, plan)
    weights = [ref["weight"] for ref in route["spec"]["rules"][-1]["backendRefs"]]
    assert weights == [100, 0]


def test_nothing_routes_before_a_stable_version_exists() -> None:
    isvc = _isvc({"mode": "gateway-api", "gateway": GATEWAY})
    plan = plan_rollout(isvc, Observed(target=None), T0)
    assert traffic_children(isvc, plan) == []


def test_replicas_mode_applies_only_the_shared_service() -> None:
    isvc = _isvc({"mode": "replicas"}, _status(step_started=True))
    [service] = traffic_children(isvc, _plan(isvc, {"1": 3, "2": 1}))
    assert service["kind"] == "Service"
    assert service["metadata"]["name"] == "iris"
    assert service["spec"]["selector"][COMPONENT_LABEL] == MODEL_SERVER_COMPONENT


@pytest.mark.parametrize(
    ("capacity", "expected"),
    [("neutral", {"1": 3, "2": 1}), ("surge", {"1": 4, "2": 1})],
)
def test_replicas_mode_sizes_tracks_by_the_step_share(
    capacity: str, expected: dict[str, int]
) -> None:
    # Before the step starts too: in this mode the candidate's first ready pod is its share.
    isvc = _isvc(
        {"mode": "replicas"},
        _status(step_started=False),
        rollout={"steps": [25, 50], "interval": "1m", "capacity": capacity},
    )
    assert desired_replicas(isvc, _plan(isvc, {"1": 4, "2": 0})) == expected


def test_replicas_mode_reports_the_weight_the_ready_pods_give() -> None:
    isvc = _isvc({"mode": "replicas"}, _status(step_started=True))
    observed = _observed({"1": 3, "2": 1})
    plan = plan_rollout(isvc, observed, T0 + datetime.timedelta(seconds=5))
    status = status_plan(isvc, observed, plan, T0).status
    assert status["canary"]["weight"] == 25
    assert status["stable"]["weight"] == 75
    traffic = next(c for c in status["conditions"] if c["type"] == reasons.TRAFFIC_AVAILABLE)
    assert traffic["status"] == "True"  # no router in this mode to wait for
    assert "Service iris" in traffic["message"]


def test_a_refused_child_is_a_condition_and_not_ready() -> None:
    isvc = _isvc(
        {"mode": "gateway-api", "gateway": GATEWAY}, {"modelName": "iris", **_status(True)}
    )
    observed = Observed(
        target=Target("iris", "1"),
        ready_replicas={"1": 4},
        refused=(reasons.TRAFFIC_KIND_NOT_SERVED, "the API server does not serve HTTPRoute"),
    )
    plan = plan_rollout(isvc, observed, T0)
    planned = status_plan(isvc, observed, plan, T0)
    by_type = {c["type"]: c for c in planned.status["conditions"]}
    assert by_type[reasons.CHILDREN_APPLIED]["reason"] == reasons.TRAFFIC_KIND_NOT_SERVED
    assert by_type[reasons.READY]["status"] == "False"
    assert by_type[reasons.READY]["reason"] == reasons.TRAFFIC_KIND_NOT_SERVED
    assert planned.status["phase"] == "Progressing"
    assert any(event.reason == reasons.TRAFFIC_KIND_NOT_SERVED for event in planned.events)


def test_service_url_per_mode() -> None:
    assert service_url(_isvc({"mode": "gateway-api", "gateway": GATEWAY})) == "http://iris.example"
    without_hostname = {"mode": "gateway-api", "gateway": {"parentRef": {"name": "public"}}}
    assert service_url(_isvc(without_hostname)) is None
    assert service_url(_isvc({"mode": "replicas"})) == "http://iris.team-a.svc.cluster.local"


@pytest.mark.parametrize(
    ("traffic", "spec", "message"),
    [
        ({"mode": "replicas"}, {"rollout": {"strategy": "Shadow"}}, "Canary or Immediate"),
        (
            {"mode": "replicas"},
            {"rollout": {"strategy": "ABTest", "abTest": {"headerName": "x"}}},
            "Canary or Immediate",
        ),
        (
            {"mode": "gateway-api", "gateway": GATEWAY},
            {"analysis": {"shadowAgreementMin": 0.9}},
            "shadowAgreementMin needs traffic.mode router",
        ),
    ],
)
def test_modes_refuse_what_they_cannot_do(
    traffic: dict[str, Any], spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _isvc(traffic, **spec)
