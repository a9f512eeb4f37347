"""gateway-api mode against the real API server with the pinned Gateway API CRDs: every
HTTPRoute the builder makes passes the CRDs' OpenAPI schema and CEL rules and is stored as
built; routes the schema forbids are refused. No gateway controller runs: storing a valid
route is what the API server can prove."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlcycle.api.v1alpha1 import InferenceService
from mlcycle.plan.traffic.gateway import desired_http_route
from tests.builders import an_inference_service
from tests.harness import Kubectl
from tests.integration.objects import applied, apply

pytestmark = pytest.mark.integration

PORT = 8080
FIELD_MANAGER = "mlcycle"


@pytest.fixture(scope="module")
def gateway_api(stack: Any) -> list[str]:
    installed: list[str] = stack.install_gateway_api_crds()
    return installed


def _inference_service(kubectl: Kubectl, namespace: str) -> InferenceService:
    """A real InferenceService to own the route: an owner that does not exist would have
    the garbage collector delete the route under the test."""
    gateway = {
        "parentRef": {"name": "public", "namespace": "infra", "sectionName": "http"},
        "hostnames": ["iris.example.com"],
    }
    return applied(
        kubectl, namespace, an_inference_service("iris").traffic("gateway-api", gateway=gateway)
    )


ROLLOUT_STEPS: list[tuple[str, dict[str, Any]]] = [
    ("stable only", {"canary_service": None}),
    ("canary at 10%", {"canary_weight": 10}),
    ("canary at 50%", {"canary_weight": 50}),
    ("A/B test on an exact header value", {"canary_weight": 20, "header_match": ("x-ab", "b")}),
    ("A/B test on any header value", {"header_match": ("x-beta", None)}),
    ("shadow mirroring 30%", {"mirror_percent": 30}),
    ("shadow mirroring everything", {"mirror_percent": 100}),
    ("promoted: the candidate is the new stable", {"canary_service": None}),
]


def test_every_rollout_step_is_a_valid_route_stored_as_built(
    gateway_api: list[str], kubectl: Kubectl, namespace: str
) -> None:
    assert "httproutes.gateway.networking.k8s.io" in gateway_api
    isvc = _inference_service(kubectl, namespace)
    for step, overrides in ROLLOUT_STEPS:
        arguments: dict[str, Any] = {
            "stable_service": "iris-v1",
            "canary_service": "iris-v2",
            "port": PORT,
            "canary_weight": 0,
            "header_match": None,
            "mirror_percent": None,
            **overrides,
        }
        route = desired_http_route(isvc, **arguments)
        apply(kubectl, namespace, route, server_side=True, field_manager=FIELD_MANAGER)
        stored = json.loads(
            kubectl("get", "httproute", "iris", "-n", namespace, "-o", "json").stdout
        )
        # Applied by one field manager, a rule the new step drops is gone, and every
        # default the API server would add is already in the desired route.
        assert stored["spec"] == route["spec"], step
    owners = stored["metadata"]["ownerReferences"]
    assert [(owner["kind"], owner["uid"], owner["controller"]) for owner in owners] == [
        ("InferenceService", isvc.metadata.uid, True)
    ]


def _route_with(isvc: InferenceService, change: Any) -> dict[str, Any]:
    route = desired_http_route(
        isvc,
        stable_service="iris-v1",
        canary_service="iris-v2",
        port=PORT,
        canary_weight=25,
        header_match=None,
        mirror_percent=40,
    )
    change(route["spec"]["rules"][0])
    return route


def _negative_weight(rule: dict[str, Any]) -> None:
    rule["backendRefs"][1]["weight"] = -25


def _percent_and_fraction(rule: dict[str, Any]) -> None:
    rule["filters"][0]["requestMirror"]["fraction"] = {"numerator": 1, "denominator": 3}


def _mirror_without_port(rule: dict[str, Any]) -> None:
    del rule["filters"][0]["requestMirror"]["backendRef"]["port"]


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (_negative_weight, "should be greater than or equal to 0"),
        (_percent_and_fraction, "Only one of percent or fraction may be specified"),
        (_mirror_without_port, "Must have port for Service reference"),
    ],
    ids=["negative weight (OpenAPI)", "percent and fraction (CEL)", "no port (CEL)"],
)
def test_invalid_routes_are_refused(
    gateway_api: list[str], kubectl: Kubectl, namespace: str, change: Any, refusal: str
) -> None:
    isvc = _inference_service(kubectl, namespace)
    route = _route_with(isvc, change)
    result = apply(
        kubectl, namespace, route, server_side=True, field_manager=FIELD_MANAGER, check=False
    )
    assert result.returncode != 0
    assert refusal in result.stderr
    missing = kubectl("get", "httproute", "iris", "-n", namespace, check=False)
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr
