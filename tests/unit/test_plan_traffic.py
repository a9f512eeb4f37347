"""The traffic layer of each mode driven by the rollout plan: the HTTPRoute and the router
agree on every step, replicas mode splits by pod counts and reports the weight the ready
pods give, and the spec rules that keep each mode to what it can do."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mlcycle.plan import reasons
from mlcycle.plan.inferenceservice.observe import Observed
from mlcycle.plan.inferenceservice.resolve import Target
from mlcycle.plan.inferenceservice.rollout import plan_rollout
from mlcycle.plan.inferenceservice.servers import desired_replicas
from mlcycle.plan.inferenceservice.status import status_plan
from mlcycle.plan.serving_names import COMPONENT_LABEL, MODEL_SERVER_COMPONENT
from mlcycle.plan.traffic import service_url, traffic_children
from mlcycle.plan.traffic.router import router_config
from mlcycle.plan.traffic.split import traffic_split
from tests.builders import NOW, an_inference_service, later

pytestmark = pytest.mark.unit

GATEWAY = {"parentRef": {"name": "public", "namespace": "infra"}, "hostnames": ["iris.example"]}
ISVC = (
    an_inference_service("iris", namespace="team-a")
    .model("iris", version=2)
    .replicas(4)
    .steps(25, 50, interval="1m")
)
GATEWAY_API = ISVC.traffic("gateway-api", gateway=GATEWAY)
REPLICAS = ISVC.traffic("replicas")
ROLLING = ISVC.status(model_name="iris").stable("1")
"""Version 1 stable, version 2 about to be rolled out: `.canary(...)` says how far."""


def _observed(ready: dict[str, int], router_ready: int = 0) -> Observed:
    return Observed(target=Target("iris", "2"), ready_replicas=ready, router_ready=router_ready)


def _plan(isvc: Any, ready: dict[str, int], router_ready: int = 0) -> Any:
    return plan_rollout(isvc, _observed(ready, router_ready), later(5))


def test_gateway_route_carries_the_same_split_as_the_router() -> None:
    for strategy, extra in (
        ("Canary", {}),
        ("ABTest", {"abTest": {"headerName": "x-variant", "headerValue": "b", "weight": 10}}),
        ("Shadow", {}),
    ):
        weight = 10 if strategy == "ABTest" else (25 if strategy == "Canary" else 0)
        isvc = (
            ROLLING.traffic("gateway-api", gateway=GATEWAY)
            .rollout(strategy=strategy, **extra)
            .canary("2", weight=weight, step_started_at=NOW)
            .obj()
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
    isvc = ROLLING.traffic("gateway-api", gateway=GATEWAY).canary("2", weight=25).obj()
    plan = _plan(isvc, {"1": 4, "2": 0})
    assert traffic_split(isvc, plan).canary_weight == 0
    [route] = traffic_children(isvc, plan)
    weights = [ref["weight"] for ref in route["spec"]["rules"][-1]["backendRefs"]]
    assert weights == [100, 0]


def test_nothing_routes_before_a_stable_version_exists() -> None:
    isvc = GATEWAY_API.obj()
    plan = plan_rollout(isvc, Observed(target=None), NOW)
    assert traffic_children(isvc, plan) == []


def test_replicas_mode_applies_only_the_shared_service() -> None:
    isvc = ROLLING.traffic("replicas").canary("2", weight=25, step_started_at=NOW).obj()
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
    isvc = ROLLING.traffic("replicas").rollout(capacity=capacity).canary("2", weight=25).obj()
    assert desired_replicas(isvc, _plan(isvc, {"1": 4, "2": 0})) == expected


def test_replicas_mode_reports_the_weight_the_ready_pods_give() -> None:
    isvc = ROLLING.traffic("replicas").canary("2", weight=25, step_started_at=NOW).obj()
    observed = _observed({"1": 3, "2": 1})
    plan = plan_rollout(isvc, observed, later(5))
    status = status_plan(isvc, observed, plan, NOW).status
    assert status["canary"]["weight"] == 25
    assert status["stable"]["weight"] == 75
    traffic = next(c for c in status["conditions"] if c["type"] == reasons.TRAFFIC_AVAILABLE)
    assert traffic["status"] == "True"  # no router in this mode to wait for
    assert "Service iris" in traffic["message"]


def test_a_refused_child_is_a_condition_and_not_ready() -> None:
    isvc = (
        ROLLING.traffic("gateway-api", gateway=GATEWAY)
        .canary("2", weight=25, step_started_at=NOW)
        .obj()
    )
    observed = Observed(
        target=Target("iris", "1"),
        ready_replicas={"1": 4},
        refused=(reasons.TRAFFIC_KIND_NOT_SERVED, "the API server does not serve HTTPRoute"),
    )
    plan = plan_rollout(isvc, observed, NOW)
    planned = status_plan(isvc, observed, plan, NOW)
    by_type = {c["type"]: c for c in planned.status["conditions"]}
    assert by_type[reasons.CHILDREN_APPLIED]["reason"] == reasons.TRAFFIC_KIND_NOT_SERVED
    assert by_type[reasons.READY]["status"] == "False"
    assert by_type[reasons.READY]["reason"] == reasons.TRAFFIC_KIND_NOT_SERVED
    assert planned.status["phase"] == "Progressing"
    assert any(event.reason == reasons.TRAFFIC_KIND_NOT_SERVED for event in planned.events)


def test_service_url_per_mode() -> None:
    assert service_url(GATEWAY_API.obj()) == "http://iris.example"
    without_hostname = ISVC.traffic("gateway-api", gateway={"parentRef": {"name": "public"}})
    assert service_url(without_hostname.obj()) is None
    assert service_url(REPLICAS.obj()) == "http://iris.team-a.svc.cluster.local"


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
        ISVC.spec(traffic=traffic, **spec).obj()
