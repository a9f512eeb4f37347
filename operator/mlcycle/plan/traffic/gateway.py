"""gateway-api traffic mode: the HTTPRoute that splits an InferenceService's requests.

The Gateway (given by `spec.traffic.gateway.parentRef`) and its controller belong to the
cluster; mlcycle writes only the route, so any conformant implementation (Envoy Gateway,
Istio, Cilium, NGINX Gateway Fabric...) carries out the rollout. One route, up to two rules:

- `candidate-pin` (ABTest): requests carrying the header always reach the candidate.
- `split`: every other request, weighted between stable and candidate; with Shadow, a
  RequestMirror filter also copies a share of them to the candidate, whose answers the
  gateway discards.

Pure: the manifest is a camelCase dict for server-side apply. Every field the API server
would default (group, kind, path match) is written out, so the stored route equals the
desired one and comparing them never shows a change that is not there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from mlcycle.api.v1alpha1.inferenceservice import InferenceService, TrackStatus
from mlcycle.plan.serving_names import (
    SERVICE_PORT,
    TRAFFIC_COMPONENT,
    child_labels,
    child_metadata,
    child_name,
    version_name,
)
from mlcycle.plan.traffic.mode import served_through
from mlcycle.plan.traffic.split import traffic_split

if TYPE_CHECKING:
    from mlcycle.plan.inferenceservice.decision import RolloutPlan
    from mlcycle.plan.inferenceservice.observe import Observed

GATEWAY_API_GROUP: Final = "gateway.networking.k8s.io"
HTTP_ROUTE_API_VERSION: Final = f"{GATEWAY_API_GROUP}/v1"
CANDIDATE_PIN_RULE: Final = "candidate-pin"
SPLIT_RULE: Final = "split"
# Gateway API has no "header present" match; a regular expression matching anything is
# how implementations express it (Envoy, Istio and Cilium only match a header that exists).
ANY_HEADER_VALUE: Final = ".*"

_ALL_PATHS: Final = {"path": {"type": "PathPrefix", "value": "/"}}


def http_route_name(isvc: InferenceService) -> str:
    return child_name(isvc)


def desired_http_route(
    isvc: InferenceService,
    *,
    stable_service: str,
    canary_service: str | None,
    port: int,
    canary_weight: int,
    header_match: tuple[str, str | None] | None,
    mirror_percent: int | None,
) -> dict[str, Any]:
    """The gateway.networking.k8s.io/v1 HTTPRoute for the current rollout step.

    `canary_weight` is the candidate's percent of unpinned requests (the stable gets the
    rest); `header_match` is `(name, value)`, value None for any value, pinning matching
    requests to the candidate; `mirror_percent` copies that share of unpinned requests to
    the candidate. Without a candidate (`canary_service` None) the stable gets everything,
    and weight, header match and mirror must be unset.
    """
    gateway = isvc.spec.traffic.gateway
    if gateway is None:
        raise ValueError(
            "spec.traffic.gateway is unset: the InferenceService is not in gateway-api mode"
        )
    if not 0 <= canary_weight <= 100:
        raise ValueError(f"canary_weight {canary_weight} is not a percent in [0, 100]")
    if mirror_percent is not None and not 0 <= mirror_percent <= 100:
        raise ValueError(f"mirror_percent {mirror_percent} is not a percent in [0, 100]")
    if canary_service is None and (canary_weight or header_match or mirror_percent is not None):
        raise ValueError("canary weight, header match and mirror need a canary_service")

    rules: list[dict[str, Any]] = []
    if header_match is not None and canary_service is not None:
        rules.append(_candidate_pin_rule(header_match, canary_service, port))
    rules.append(_split_rule(stable_service, canary_service, port, canary_weight, mirror_percent))

    parent_ref: dict[str, Any] = {
        "group": GATEWAY_API_GROUP,
        "kind": "Gateway",
        "name": gateway.parent_ref.name,
    }
    if gateway.parent_ref.namespace is not None:
        parent_ref["namespace"] = gateway.parent_ref.namespace
    if gateway.parent_ref.section_name is not None:
        parent_ref["sectionName"] = gateway.parent_ref.section_name
    spec: dict[str, Any] = {"parentRefs": [parent_ref], "rules": rules}
    if gateway.hostnames:
        spec["hostnames"] = list(gateway.hostnames)
    return {
        "apiVersion": HTTP_ROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": child_metadata(
            isvc, http_route_name(isvc), child_labels(isvc, TRAFFIC_COMPONENT)
        ),
        "spec": spec,
    }


def _service_ref(service: str, port: int) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": service, "port": port}


def _candidate_pin_rule(
    header_match: tuple[str, str | None], canary_service: str, port: int
) -> dict[str, Any]:
    header_name, header_value = header_match
    header = (
        {"type": "Exact", "name": header_name, "value": header_value}
        if header_value is not None
        else {"type": "RegularExpression", "name": header_name, "value": ANY_HEADER_VALUE}
    )
    return {
        "name": CANDIDATE_PIN_RULE,
        "matches": [{**_ALL_PATHS, "headers": [header]}],
        "backendRefs": [{**_service_ref(canary_service, port), "weight": 100}],
    }


def _split_rule(
    stable_service: str,
    canary_service: str | None,
    port: int,
    canary_weight: int,
    mirror_percent: int | None,
) -> dict[str, Any]:
    # Weights are relative, not percents, in Gateway API; integers summing to 100 make
    # them read as percents all the same. A candidate at 0 stays listed so the step that
    # raises its weight changes one number, not the list.
    backend_refs = [{**_service_ref(stable_service, port), "weight": 100 - canary_weight}]
    if canary_service is not None:
        backend_refs.append({**_service_ref(canary_service, port), "weight": canary_weight})
    rule: dict[str, Any] = {
        "name": SPLIT_RULE,
        "matches": [dict(_ALL_PATHS)],
        "backendRefs": backend_refs,
    }
    if mirror_percent is not None and canary_service is not None:
        rule["filters"] = [
            {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": _service_ref(canary_service, port),
                    "percent": mirror_percent,
                },
            }
        ]
    return rule


def gateway_route(isvc: InferenceService, plan: RolloutPlan) -> dict[str, Any]:
    """The HTTPRoute over the versions' own Services."""
    split = traffic_split(isvc, plan)
    if split.stable is None:
        raise ValueError("a route needs a stable version")
    return desired_http_route(
        isvc,
        stable_service=version_name(isvc, split.stable),
        canary_service=version_name(isvc, split.canary) if split.canary is not None else None,
        port=SERVICE_PORT,
        canary_weight=split.canary_weight,
        header_match=split.pin_header,
        mirror_percent=split.mirror_percent or None,
    )


class GatewayMode:
    """`traffic.mode: gateway-api`."""

    # Each gateway implementation counts requests its own way, if at all: the model
    # servers are read instead.
    counts_requests = False

    def children(
        self, isvc: InferenceService, plan: RolloutPlan, image: str
    ) -> list[dict[str, Any]]:
        return [gateway_route(isvc, plan)]

    def pod_split(self, isvc: InferenceService, full: int, share: int) -> tuple[int, int] | None:
        return None

    def observed_weights(
        self, stable: TrackStatus | None, canary: TrackStatus | None
    ) -> tuple[TrackStatus | None, TrackStatus | None]:
        # What the route asks for: the gateway reports no split of its own to compare.
        return stable, canary

    def entry_ready(self, observed: Observed) -> bool:
        return True  # a Gateway has no readiness of its own: the stable's pods decide

    def url(self, isvc: InferenceService) -> str | None:
        """The route's first hostname; none without one (the Gateway's address is the
        cluster's)."""
        gateway = isvc.spec.traffic.gateway
        return (
            f"http://{gateway.hostnames[0]}" if gateway is not None and gateway.hostnames else None
        )

    def traffic_message(
        self, isvc: InferenceService, observed: Observed, stable: TrackStatus | None, serving: bool
    ) -> str:
        return served_through(f"HTTPRoute {http_route_name(isvc)}", stable, serving)
