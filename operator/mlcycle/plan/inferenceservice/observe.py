"""What the cluster says about an InferenceService's serving: the `Observed` snapshot a
pass plans from, read out of the children the API server returned (ready pods per version,
ready router pods, the pod addresses whose metrics the analysis reads)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mlcycle.api.v1alpha1.inferenceservice import CounterSample
from mlcycle.plan.inferenceservice.resolve import Blocked, Target
from mlcycle.plan.serving_names import (
    COMPONENT_LABEL,
    MODEL_SERVER_COMPONENT,
    ROUTER_COMPONENT,
    SERVER_PORT,
    VERSION_LABEL,
)
from mlcycle.plan.traffic.router import ROUTER_ADMIN_PORT

Track = Literal["stable", "canary"]
"""A track as the router's metrics name it."""


@dataclass(frozen=True)
class Observed:
    """One pass's snapshot: the version resolved, the children's readiness, the counters."""

    target: Target | None
    blocked: Blocked | None = None
    ready_replicas: Mapping[str, int] = field(default_factory=dict)
    """Ready pods of each version's Deployment."""
    router_ready: int = 0
    refused: tuple[str, str] | None = None
    """(reason, message) of a child the API server refused: traffic is not what it should be."""
    canary_sample: CounterSample | None = None
    """The candidate's counters summed over the router pods; None when not read."""
    queries: Mapping[str, float | None] | None = None
    """Prometheus checks, by name, when an operator with Prometheus ran them."""


def ready_replicas(deployments: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Ready pods per version, from the server Deployments' status."""
    found: dict[str, int] = {}
    for deployment in deployments:
        labels = (deployment.get("metadata") or {}).get("labels") or {}
        if labels.get(COMPONENT_LABEL) != MODEL_SERVER_COMPONENT or VERSION_LABEL not in labels:
            continue
        status = deployment.get("status") or {}
        found[str(labels[VERSION_LABEL])] = int(status.get("readyReplicas") or 0)
    return found


def router_ready(deployments: Sequence[Mapping[str, Any]]) -> int:
    for deployment in deployments:
        labels = (deployment.get("metadata") or {}).get("labels") or {}
        if labels.get(COMPONENT_LABEL) == ROUTER_COMPONENT:
            return int((deployment.get("status") or {}).get("readyReplicas") or 0)
    return 0


def router_pod_addresses(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """`ip:admin-port` of the router pods that are running, to read their metrics."""
    return _pod_addresses(pods, ROUTER_COMPONENT, None, ROUTER_ADMIN_PORT)


def server_pod_addresses(pods: Sequence[Mapping[str, Any]], version: str) -> list[str]:
    """`ip:port` of the running model server pods of `version` (metrics on the serving port)."""
    return _pod_addresses(pods, MODEL_SERVER_COMPONENT, version, SERVER_PORT)


def _pod_addresses(
    pods: Sequence[Mapping[str, Any]], component: str, version: str | None, port: int
) -> list[str]:
    addresses = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        status = pod.get("status") or {}
        if labels.get(COMPONENT_LABEL) != component or status.get("phase") != "Running":
            continue
        if version is not None and labels.get(VERSION_LABEL) != version:
            continue
        if status.get("podIP") and not metadata.get("deletionTimestamp"):
            addresses.append(f"{status['podIP']}:{port}")
    return sorted(addresses)
