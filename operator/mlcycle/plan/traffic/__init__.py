"""The traffic layer: the table of `spec.traffic.mode` values, each a module behind the
`TrafficMode` interface, and the calls that go to the spec's mode.

- router (`router`): mlcycle's router Deployment, Service, RBAC and the ConfigMap of
  weights, header pins and mirroring; exact proportions, and it measures shadow agreement.
- gateway-api (`gateway`): one HTTPRoute on the user's Gateway, whose controller splits the
  requests (weights, a header match, a RequestMirror filter).
- replicas (`replicas`): one Service over both versions' pods; the split is the replica
  counts (`TrafficMode.pod_split`), so the layer itself is only the Service.

Every mode carries out the same `TrafficSplit` (`split`). Adding a mode is adding its module
and its line in `TRAFFIC_MODES`. Pure: manifests are camelCase dicts for server-side apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from mlcycle.api.v1alpha1.inferenceservice import InferenceService
from mlcycle.plan.serving_pods import DEFAULT_IMAGE
from mlcycle.plan.traffic.gateway import GatewayMode
from mlcycle.plan.traffic.mode import TrafficMode
from mlcycle.plan.traffic.replicas import ReplicasMode
from mlcycle.plan.traffic.router import RouterMode
from mlcycle.plan.traffic.split import TrafficSplit, traffic_split

if TYPE_CHECKING:
    from mlcycle.plan.inferenceservice.decision import RolloutPlan

TRAFFIC_MODES: Final[Mapping[str, TrafficMode]] = {
    "router": RouterMode(),
    "gateway-api": GatewayMode(),
    "replicas": ReplicasMode(),
}


def traffic_mode(isvc: InferenceService) -> TrafficMode:
    """The implementation of `isvc`'s `spec.traffic.mode`."""
    return TRAFFIC_MODES[isvc.spec.traffic.mode]


def traffic_children(
    isvc: InferenceService, plan: RolloutPlan, image: str = DEFAULT_IMAGE
) -> list[dict[str, Any]]:
    """What splits requests between the plan's stable and candidate, for the spec's mode;
    nothing before a stable version exists."""
    if plan.stable is None or plan.stable.version is None:
        return []
    return traffic_mode(isvc).children(isvc, plan, image)


def service_url(isvc: InferenceService) -> str | None:
    """Where clients call, for the spec's mode (`status.url`)."""
    return traffic_mode(isvc).url(isvc)


__all__ = [
    "TRAFFIC_MODES",
    "TrafficMode",
    "TrafficSplit",
    "service_url",
    "traffic_children",
    "traffic_mode",
    "traffic_split",
]
