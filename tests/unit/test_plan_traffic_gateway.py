"""gateway-api mode: the HTTPRoute for each rollout step, on real InferenceService models."""

from __future__ import annotations

from typing import Any

import pytest

from mlcycle.plan.traffic.gateway import desired_http_route
from tests.builders import an_inference_service

pytestmark = pytest.mark.unit

PORT = 8080


PUBLIC = {"parentRef": {"name": "public"}, "hostnames": ["iris.example.com"]}
SERVICE = (
    an_inference_service("iris", namespace="team-a")
    .uid("uid-7")
    .generation(2)
    .traffic("gateway-api", gateway=PUBLIC)
)


def _route(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "stable_service": "iris-stable",
        "canary_service": "iris-canary",
        "port": PORT,
        "canary_weight": 0,
        "header_match": None,
        "mirror_percent": None,
        **overrides,
    }
    return desired_http_route(SERVICE.obj(), **arguments)


def _ref(name: str, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": name, "port": PORT}
    if weight is not None:
        ref["weight"] = weight
    return ref


ALL_PATHS = {"path": {"type": "PathPrefix", "value": "/"}}


@pytest.mark.parametrize(
    ("case", "overrides", "expected_rules"),
    [
        (
            "stable only",
            {"canary_service": None},
            [{"name": "split", "matches": [ALL_PATHS], "backendRefs": [_ref("iris-stable", 100)]}],
        ),
        (
            "canary step at 25%",
            {"canary_weight": 25},
            [
                {
                    "name": "split",
                    "matches": [ALL_PATHS],
                    "backendRefs": [_ref("iris-stable", 75), _ref("iris-canary", 25)],
                }
            ],
        ),
        (
            "candidate deployed, no traffic yet",
            {"canary_weight": 0},
            [
                {
                    "name": "split",
                    "matches": [ALL_PATHS],
                    "backendRefs": [_ref("iris-stable", 100), _ref("iris-canary", 0)],
                }
            ],
        ),
        (
            "all traffic on the candidate",
            {"canary_weight": 100},
            [
                {
                    "name": "split",
                    "matches": [ALL_PATHS],
                    "backendRefs": [_ref("iris-stable", 0), _ref("iris-canary", 100)],
                }
            ],
        ),
        (
            "A/B test pinning an exact header value, 10% of the rest",
            {"canary_weight": 10, "header_match": ("x-variant", "b")},
            [
                {
                    "name": "candidate-pin",
                    "matches": [
                        {
                            **ALL_PATHS,
                            "headers": [{"type": "Exact", "name": "x-variant", "value": "b"}],
                        }
                    ],
                    "backendRefs": [_ref("iris-canary", 100)],
                },
                {
                    "name": "split",
                    "matches": [ALL_PATHS],
                    "backendRefs": [_ref("iris-stable", 90), _ref("iris-canary", 10)],
                },
            ],
        ),
        (
            "A/B test pinning any value of the header",
            {"header_match": ("x-beta", None)},
            [
                {
                    "name": "candidate-pin",
                    "matches": [
                        {
                            **ALL_PATHS,
                            "headers": [
                                {"type": "RegularExpression", "name": "x-beta", "value": ".*"}
                            ],
                        }
                    ],
                    "backendRefs": [_ref("iris-canary", 100)],
                },
                {
                    "name": "split",
                    "matches": [ALL_PATHS],
                    "backendRefs": [_ref("iris-stable", 100), _ref("iris-canary", 0)],
                },
            ],
        ),
        (
            "shadow mirroring half the requests",
            {"mirror_percent": 50},
            [
                {
                    "name": "split",
                    "matches": [ALL_PATHS],
                    "backendRefs": [_ref("iris-stable", 100), _ref("iris-canary", 0)],
                    "filters": [
                        {
                            "type": "RequestMirror",
                            "requestMirror": {"backendRef": _ref("iris-canary"), "percent": 50},
                        }
                    ],
                }
            ],
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_rules_for_each_step(
    case: str, overrides: dict[str, Any], expected_rules: list[dict[str, Any]]
) -> None:
    route = _route(**overrides)
    assert route["spec"]["rules"] == expected_rules, case
    for rule in route["spec"]["rules"]:
        if rule["name"] == "split":
            assert sum(ref["weight"] for ref in rule["backendRefs"]) == 100


def test_route_is_owned_by_the_service_and_attached_to_its_gateway() -> None:
    route = _route(canary_weight=10)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["kind"] == "HTTPRoute"
    assert route["metadata"]["name"] == "iris"
    assert route["metadata"]["namespace"] == "team-a"
    assert route["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "mlcycle.dev/v1alpha1",
            "kind": "InferenceService",
            "name": "iris",
            "uid": "uid-7",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert route["metadata"]["labels"]["mlcycle.dev/inferenceservice-uid"] == "uid-7"
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}
    ]
    assert route["spec"]["hostnames"] == ["iris.example.com"]


@pytest.mark.parametrize(
    ("gateway", "parent_ref", "has_hostnames"),
    [
        (
            {"parentRef": {"name": "edge", "namespace": "infra", "sectionName": "https"}},
            {
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "name": "edge",
                "namespace": "infra",
                "sectionName": "https",
            },
            False,
        ),
        (
            {"parentRef": {"name": "edge"}, "hostnames": ["a.example.com", "b.example.com"]},
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
            True,
        ),
    ],
)
def test_parent_ref_and_hostnames_follow_the_spec(
    gateway: dict[str, Any], parent_ref: dict[str, Any], has_hostnames: bool
) -> None:
    route = desired_http_route(
        SERVICE.traffic("gateway-api", gateway=gateway).obj(),
        stable_service="s",
        canary_service=None,
        port=PORT,
        canary_weight=0,
        header_match=None,
        mirror_percent=None,
    )
    assert route["spec"]["parentRefs"] == [parent_ref]
    assert ("hostnames" in route["spec"]) is has_hostnames


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"canary_weight": 101}, "not a percent"),
        ({"canary_weight": -1}, "not a percent"),
        ({"mirror_percent": 120}, "not a percent"),
        ({"canary_service": None, "canary_weight": 10}, "need a canary_service"),
        ({"canary_service": None, "header_match": ("x-variant", "b")}, "need a canary_service"),
        ({"canary_service": None, "mirror_percent": 0}, "need a canary_service"),
    ],
)
def test_impossible_steps_are_refused(overrides: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        _route(**overrides)


def test_router_mode_service_has_no_route() -> None:
    service = an_inference_service("iris", namespace="team-a").model("iris", version=1).obj()
    with pytest.raises(ValueError, match="not in gateway-api mode"):
        desired_http_route(
            service,
            stable_service="s",
            canary_service=None,
            port=PORT,
            canary_weight=0,
            header_match=None,
            mirror_percent=None,
        )
