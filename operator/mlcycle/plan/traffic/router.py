"""router traffic mode: mlcycle's router Deployment, its Service, RBAC and the ConfigMap
of weights, header pins and mirroring.

The router splits in exact proportions, counts each track's requests (mirrored ones
apart) and measures shadow agreement. The ConfigMap is its contract
(`mlcycle.api.routerconfig`). Pure: manifests are camelCase dicts for server-side apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from mlcycle.api.routerconfig import DEFAULT_CONFIGMAP_KEY, RouterConfig
from mlcycle.api.v1alpha1.inferenceservice import InferenceService, TrackStatus
from mlcycle.plan.serving_names import (
    GRPC_PORT,
    GRPC_PORT_NAME,
    ROUTER_COMPONENT,
    child_labels,
    child_metadata,
    child_name,
    cluster_url,
    router_name,
    router_selector,
    service_ports,
    version_name,
)
from mlcycle.plan.serving_pods import DEFAULT_IMAGE, POD_IP_ENV, with_overlay
from mlcycle.plan.traffic.split import traffic_split

if TYPE_CHECKING:
    from mlcycle.plan.inferenceservice.decision import RolloutPlan
    from mlcycle.plan.inferenceservice.observe import Observed

ROUTER_PORT: Final = 8080
ROUTER_ADMIN_PORT: Final = 9090
_NAMESPACE_ENV: Final = {
    "name": "POD_NAMESPACE",
    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
}


def router_config(isvc: InferenceService, plan: RolloutPlan) -> RouterConfig:
    """Backends are the tracks; each names its version's Service and version label."""
    split = traffic_split(isvc, plan)
    backends: dict[str, dict[str, Any]] = {}
    weights: dict[str, int] = {}
    if split.stable is not None:
        backends["stable"] = _backend(isvc, split.stable)
        weights["stable"] = 100 - split.canary_weight
    if split.canary is not None:
        backends["canary"] = _backend(isvc, split.canary)
        weights["canary"] = split.canary_weight
    document: dict[str, Any] = {
        "service": str(isvc.metadata.name),
        "backends": backends,
        "weights": weights,
        "headerRoutes": [],
    }
    if split.pin_header is not None:
        header, value = split.pin_header
        route: dict[str, Any] = {"header": header, "backend": "canary"}
        if value is not None:
            route["value"] = value
        document["headerRoutes"].append(route)
    if split.mirror_percent > 0:
        document["shadow"] = {"backend": "canary", "percent": split.mirror_percent}
    return RouterConfig.model_validate(document)


def _backend(isvc: InferenceService, version: str) -> dict[str, Any]:
    return {
        "service": version_name(isvc, version),
        "port": "http",
        "grpcPort": GRPC_PORT_NAME,
        "version": version,
    }


def router_configmap(isvc: InferenceService, config: RouterConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(isvc, router_name(isvc), child_labels(isvc, ROUTER_COMPONENT)),
        "data": {DEFAULT_CONFIGMAP_KEY: config.to_json()},
    }


def router_deployment(isvc: InferenceService, image: str = DEFAULT_IMAGE) -> dict[str, Any]:
    router = isvc.spec.traffic.router
    labels = child_labels(isvc, ROUTER_COMPONENT)
    name = router_name(isvc)
    container: dict[str, Any] = {
        "name": "router",
        "image": router.image or image,
        "command": ["mlcycle"],
        "args": [
            "router",
            f"--configmap={name}",
            "--namespace=$(POD_NAMESPACE)",
            "--host=$(POD_IP)",
            f"--port={ROUTER_PORT}",
            f"--grpc-port={GRPC_PORT}",
            "--admin-host=$(POD_IP)",
            f"--admin-port={ROUTER_ADMIN_PORT}",
        ],
        "env": [dict(POD_IP_ENV), dict(_NAMESPACE_ENV)],
        "ports": [
            {"name": "http", "containerPort": ROUTER_PORT, "protocol": "TCP"},
            {"name": GRPC_PORT_NAME, "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": ROUTER_ADMIN_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "admin"},
            "periodSeconds": 2,
        },
    }
    pod = with_overlay({"serviceAccountName": name, "containers": [container]}, container, router)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(isvc, name, labels),
        "spec": {
            "replicas": router.replicas,
            "selector": {"matchLabels": router_selector(isvc)},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def router_service(isvc: InferenceService) -> dict[str, Any]:
    """The InferenceService's address (`status.url`)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(isvc, child_name(isvc), child_labels(isvc, ROUTER_COMPONENT)),
        "spec": {
            "selector": router_selector(isvc),
            "ports": service_ports(),
        },
    }


def router_access(isvc: InferenceService) -> list[dict[str, Any]]:
    """The router reads its ConfigMap and its backends' EndpointSlices, nothing else: a
    ServiceAccount per InferenceService with a Role limited to that."""
    name = router_name(isvc)
    labels = child_labels(isvc, ROUTER_COMPONENT)
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": child_metadata(isvc, name, labels),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": child_metadata(isvc, name, labels),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [name],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": child_metadata(isvc, name, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [
                {"kind": "ServiceAccount", "name": name, "namespace": isvc.metadata.namespace}
            ],
        },
    ]


def router_children(
    isvc: InferenceService, plan: RolloutPlan, image: str = DEFAULT_IMAGE
) -> list[dict[str, Any]]:
    """Traffic layer of mode `router`: RBAC, router Deployment and Service, then the
    ConfigMap last so weights move only after the backends they name exist."""
    return [
        *router_access(isvc),
        router_service(isvc),
        router_deployment(isvc, image),
        router_configmap(isvc, router_config(isvc, plan)),
    ]


class RouterMode:
    """`traffic.mode: router`."""

    counts_requests = True

    def children(
        self, isvc: InferenceService, plan: RolloutPlan, image: str
    ) -> list[dict[str, Any]]:
        return router_children(isvc, plan, image)

    def pod_split(self, isvc: InferenceService, full: int, share: int) -> tuple[int, int] | None:
        return None

    def observed_weights(
        self, stable: TrackStatus | None, canary: TrackStatus | None
    ) -> tuple[TrackStatus | None, TrackStatus | None]:
        # The router splits in exact proportions: the weight it was given is the one served.
        return stable, canary

    def entry_ready(self, observed: Observed) -> bool:
        return observed.router_ready > 0

    def url(self, isvc: InferenceService) -> str | None:
        return cluster_url(isvc)

    def traffic_message(
        self, isvc: InferenceService, observed: Observed, stable: TrackStatus | None, serving: bool
    ) -> str:
        version = stable.version if stable else "?"
        if serving:
            return f"router and version {version} answer requests"
        ready = stable.ready_replicas or 0 if stable else 0
        return f"{observed.router_ready} router pods ready, {ready} stable pods ready"
