"""The traffic layer of each `traffic.mode`: the children that carry out the rollout's
split (`plan.inferenceservice.traffic_split`) between the versions being served.

- router: mlcycle's router Deployment, Service, RBAC and the ConfigMap of weights, header
  pins and mirroring; exact proportions, and it measures shadow agreement.
- gateway-api: one HTTPRoute on the user's Gateway, whose controller splits the requests
  (weights, a header match, a RequestMirror filter).
- replicas: one Service over both versions' pods; the split is the replica counts, which
  `plan.inferenceservice.desired_replicas` sets, so the layer itself is only the Service.

Pure: manifests are camelCase dicts for server-side apply.
"""

from __future__ import annotations

from typing import Any

from mlcycle.api.v1alpha1.inferenceservice import InferenceService
from mlcycle.plan.inferenceservice import (
    DEFAULT_IMAGE,
    RolloutPlan,
    router_children,
    traffic_split,
)
from mlcycle.plan.serving_names import SERVICE_PORT, version_name
from mlcycle.plan.traffic_gateway import desired_http_route
from mlcycle.plan.traffic_replicas import desired_shared_service


def traffic_children(
    isvc: InferenceService, plan: RolloutPlan, image: str = DEFAULT_IMAGE
) -> list[dict[str, Any]]:
    """What splits requests between the plan's stable and candidate, for the spec's mode;
    nothing before a stable version exists."""
    if plan.stable is None or plan.stable.version is None:
        return []
    mode = isvc.spec.traffic.mode
    if mode == "router":
        return router_children(isvc, plan, image)
    if mode == "gateway-api":
        return [gateway_route(isvc, plan)]
    return [desired_shared_service(isvc)]


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
