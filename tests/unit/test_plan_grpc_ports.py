"""gRPC in the rendered children: the model servers' and routers' `grpc` container ports
and flags, every Service's h2c port, the router configuration naming the gRPC port."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from mlcycle.api.routerconfig import RouterConfig
from mlcycle.api.v1alpha1 import InferenceService
from mlcycle.dataplane.router.table import DiscoveredEndpoint, RoutingTable
from mlcycle.plan.inferenceservice.decision import RolloutPlan
from mlcycle.plan.inferenceservice.observe import Observed
from mlcycle.plan.inferenceservice.resolve import Target
from mlcycle.plan.inferenceservice.rollout import plan_rollout
from mlcycle.plan.inferenceservice.servers import server_children
from mlcycle.plan.traffic import traffic_children
from mlcycle.plan.traffic.router import router_children

pytestmark = pytest.mark.unit

T0 = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
GRPC_SERVICE_PORT = {
    "name": "grpc",
    "port": 8081,
    "targetPort": "grpc",
    "protocol": "TCP",
    "appProtocol": "kubernetes.io/h2c",
}


def _isvc(mode: str = "router") -> InferenceService:
    """Version 2 at its first step of a canary over version 1."""
    return InferenceService.model_validate(
        {
            "metadata": {"name": "iris", "namespace": "team-a", "uid": "uid-1", "generation": 1},
            "spec": {
                "model": {"name": "iris", "version": 2},
                "rollout": {"steps": [25], "interval": "1m"},
                "traffic": {"mode": mode},
            },
            "status": {
                "stable": {"version": "1", "modelUri": "models:/iris/1", "weight": 100},
                "canary": {
                    "version": "2",
                    "modelUri": "models:/iris/2",
                    "weight": 25,
                    "step": 0,
                    "failedChecks": 0,
                    "startedAt": T0.isoformat(),
                    "stepStartedAt": T0.isoformat(),
                },
            },
        }
    )


def _plan(isvc: InferenceService) -> RolloutPlan:
    observed = Observed(target=Target("iris", "2"), ready_replicas={"1": 1, "2": 1}, router_ready=1)
    return plan_rollout(isvc, observed, T0 + datetime.timedelta(seconds=1))


def _children(mode: str = "router") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The model servers' children, and the traffic layer's."""
    isvc = _isvc(mode)
    plan = _plan(isvc)
    return server_children(isvc, plan, "iris", None), traffic_children(isvc, plan)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_model_servers_serve_grpc_on_a_named_port() -> None:
    servers, _ = _children()
    deployments = [c for c in servers if c["kind"] == "Deployment"]
    assert len(deployments) == 2
    for deployment in deployments:
        container = _container(deployment)
        assert "--grpc-port=8081" in container["args"]
        assert {"name": "grpc", "containerPort": 8081, "protocol": "TCP"} in container["ports"]


def test_every_service_exposes_grpc_as_h2c_beside_http() -> None:
    servers, traffic = _children()
    services = [c for c in [*servers, *traffic] if c["kind"] == "Service"]
    assert [s["metadata"]["name"] for s in services] == ["iris-v1", "iris-v2", "iris"]
    for service in services:
        assert [p["name"] for p in service["spec"]["ports"]] == ["http", "grpc"]
        assert GRPC_SERVICE_PORT in service["spec"]["ports"]
    _, replicas = _children("replicas")
    assert GRPC_SERVICE_PORT in replicas[0]["spec"]["ports"]


def test_the_router_listens_for_grpc_and_finds_the_backends_grpc_port() -> None:
    isvc = _isvc()
    routers = router_children(isvc, _plan(isvc))
    container = _container(next(c for c in routers if c["kind"] == "Deployment"))
    assert "--grpc-port=8081" in container["args"]
    assert {"name": "grpc", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    config = RouterConfig.from_text(routers[-1]["data"]["router.yaml"])
    assert {b.grpc_port for b in config.backends.values()} == {"grpc"}
    # The version Services' `grpc` port, as their EndpointSlices list it, is where the
    # router sends gRPC; HTTP still goes to `http`.
    ports = (("http", 8080), ("grpc", 8081))
    discovered = {
        "iris-v1": (DiscoveredEndpoint("10.0.0.1", ports),),
        "iris-v2": (DiscoveredEndpoint("10.0.0.2", ports),),
    }
    grpc = RoutingTable.build(config, discovered, transport="grpc")
    http = RoutingTable.build(config, discovered)
    assert {str(e) for e in grpc.endpoints()} == {"10.0.0.1:8081", "10.0.0.2:8081"}
    assert {str(e) for e in http.endpoints()} == {"10.0.0.1:8080", "10.0.0.2:8080"}
