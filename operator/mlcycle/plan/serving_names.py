"""Names, labels and metadata of an InferenceService's children, and the selectors every
traffic mode shares.

The model servers (`plan.inferenceservice`) and the traffic modes (`plan.traffic`) both
name children, so this module sits beside both packages rather than inside either.

Every child carries `child_labels(isvc, component)`. Model-server pods also carry their
version (`VERSION_LABEL`): Deployments are named and selected by version, not by track, so
promotion turns the candidate's pods into the stable ones without touching them. In
replicas mode the shared Service selects on `model_server_selector` alone, so both
versions answer it and the split is the ratio of their ready pods; router pods carry
another component value, or that Service would send requests to the router.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mlcycle.api.v1alpha1.inferenceservice import InferenceService
from mlcycle.plan.ownership import MANAGED_BY_LABEL, controller_reference, name_label, short_hash

INFERENCESERVICE_LABEL: Final = "mlcycle.dev/inferenceservice"
INFERENCESERVICE_UID_LABEL: Final = "mlcycle.dev/inferenceservice-uid"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
MODEL_SERVER_COMPONENT: Final = "model-server"
ROUTER_COMPONENT: Final = "router"
TRAFFIC_COMPONENT: Final = "traffic"
"""Objects that only route (the HTTPRoute, the shared Service of replicas mode)."""
VERSION_LABEL: Final = "mlcycle.dev/model-version"
SERVICE_PORT: Final = 80
"""The HTTP port of every Service of an InferenceService (its model servers' named port
`http` behind it)."""
SERVICE_PORT_NAME: Final = "http"
SERVER_PORT: Final = 8080
"""The model server containers' HTTP port (the named port `http`), where their metrics are."""
GRPC_PORT: Final = 8081
"""The gRPC port of every Service of an InferenceService, and of the model server and router
containers behind them (the named port `grpc`): the model server's default."""
GRPC_PORT_NAME: Final = "grpc"
H2C_APP_PROTOCOL: Final = "kubernetes.io/h2c"
"""HTTP/2 without TLS: tells gateways and meshes to speak HTTP/2 to the port, as gRPC needs."""
_NAME_LIMIT: Final = 63


def child_name(isvc: InferenceService, suffix: str = "") -> str:
    """`<isvc><suffix>`, shortened with a hash to a DNS label (Services need one)."""
    name = f"{isvc.metadata.name}{suffix}"
    if len(name) <= _NAME_LIMIT:
        return name
    keep = _NAME_LIMIT - len(suffix) - 9
    return f"{str(isvc.metadata.name)[:keep].rstrip('.-')}-{short_hash(name)}{suffix}"


def version_name(isvc: InferenceService, version: str) -> str:
    # Named by version, not by track: on promotion the candidate's pods become the stable
    # ones as they are; only the router's configuration changes.
    return child_name(isvc, f"-v{version}")


def router_name(isvc: InferenceService) -> str:
    return child_name(isvc, "-router")


def child_labels(isvc: InferenceService, component: str) -> dict[str, str]:
    """Labels every child of `isvc` carries (Services, routes, Deployments, pods)."""
    return {
        MANAGED_BY_LABEL: "mlcycle",
        INFERENCESERVICE_LABEL: name_label(str(isvc.metadata.name)),
        INFERENCESERVICE_UID_LABEL: str(isvc.metadata.uid),
        COMPONENT_LABEL: component,
    }


def child_metadata(isvc: InferenceService, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """The metadata of a child: its name and labels, in `isvc`'s namespace, owned by it."""
    return {
        "name": name,
        "namespace": isvc.metadata.namespace,
        "labels": dict(labels),
        "ownerReferences": [controller_reference(isvc)],
    }


def cluster_url(isvc: InferenceService) -> str:
    """The in-cluster address of the Service named after `isvc` (the router's, or the shared
    one of replicas mode)."""
    return f"http://{child_name(isvc)}.{isvc.metadata.namespace}.svc.cluster.local"


def model_server_selector(isvc: InferenceService) -> dict[str, str]:
    """The labels every model-server pod of `isvc` carries, whatever its version."""
    return {
        INFERENCESERVICE_UID_LABEL: str(isvc.metadata.uid),
        COMPONENT_LABEL: MODEL_SERVER_COMPONENT,
    }


def version_selector(isvc: InferenceService, version: str) -> dict[str, str]:
    """The model-server pods of one version."""
    return {INFERENCESERVICE_UID_LABEL: str(isvc.metadata.uid), VERSION_LABEL: version}


def router_selector(isvc: InferenceService) -> dict[str, str]:
    return {
        INFERENCESERVICE_UID_LABEL: str(isvc.metadata.uid),
        COMPONENT_LABEL: ROUTER_COMPONENT,
    }


def service_ports() -> list[dict[str, object]]:
    """The ports of every Service of an InferenceService: HTTP, and gRPC (OIP v2)."""
    return [
        {
            "name": SERVICE_PORT_NAME,
            "port": SERVICE_PORT,
            "targetPort": SERVICE_PORT_NAME,
            "protocol": "TCP",
        },
        {
            "name": GRPC_PORT_NAME,
            "port": GRPC_PORT,
            "targetPort": GRPC_PORT_NAME,
            "protocol": "TCP",
            "appProtocol": H2C_APP_PROTOCOL,
        },
    ]
