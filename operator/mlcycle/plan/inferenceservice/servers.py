"""The model servers of an InferenceService: how many pods each served version runs, its
Deployment and Service, the stable's autoscaler, and which of them are no longer served.

Pure: manifests are camelCase dicts for server-side apply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mlcycle.api.v1alpha1.inferenceservice import InferenceService, TrackStatus
from mlcycle.plan.inferenceservice.decision import RolloutPlan
from mlcycle.plan.serving_names import (
    COMPONENT_LABEL,
    GRPC_PORT,
    GRPC_PORT_NAME,
    MODEL_SERVER_COMPONENT,
    SERVER_PORT,
    VERSION_LABEL,
    child_labels,
    child_metadata,
    child_name,
    service_ports,
    version_name,
    version_selector,
)
from mlcycle.plan.serving_pods import DEFAULT_IMAGE, POD_IP_ENV, with_overlay
from mlcycle.plan.traffic import traffic_mode
from mlcycle.plan.traffic.split import strategy_weight
from mlcycle.plan.workload import mlflow_env


def full_replicas(isvc: InferenceService) -> int:
    server = isvc.spec.server
    return server.min_replicas if server.min_replicas is not None else server.replicas


def desired_replicas(isvc: InferenceService, plan: RolloutPlan) -> dict[str, int]:
    """Replicas per version. Where the traffic mode makes the pods the split
    (`TrafficMode.pod_split`), its counts; elsewhere surge: the candidate runs at full size
    beside the stable; neutral: the candidate gets its step's share and the stable gives it
    up (a fixed GPU budget), never below one pod while it serves."""
    full = full_replicas(isvc)
    replicas: dict[str, int] = {}
    if plan.stable is not None and plan.stable.version is not None:
        replicas[plan.stable.version] = full
    canary = plan.canary
    if canary is None or canary.version is None:
        return replicas
    share = strategy_weight(isvc, canary.step or 0)
    pods = None if canary.promoting else traffic_mode(isvc).pod_split(isvc, full, share)
    if pods is not None:
        stable_count, canary_count = pods
        if plan.stable is not None and plan.stable.version is not None:
            replicas[plan.stable.version] = stable_count
        replicas[canary.version] = canary_count
        return replicas
    neutral = isvc.spec.rollout.capacity == "neutral" and isvc.spec.rollout.strategy == "Canary"
    canary_share = min(full, max(1, math.ceil(full * share / 100)))
    replicas[canary.version] = full if canary.promoting or not neutral else canary_share
    if neutral and plan.stable is not None and plan.stable.version is not None and full > 0:
        # While promoting, the stable keeps its share until the candidate takes over.
        replicas[plan.stable.version] = max(1, full - canary_share)
    return replicas


def server_deployment(
    isvc: InferenceService,
    track: TrackStatus,
    model_name: str,
    replicas: int | None,
    tracking_uri: str | None,
    image: str = DEFAULT_IMAGE,
    credentials_secret: str | None = None,
) -> dict[str, Any]:
    """The model server Deployment of one version; `replicas` None leaves them to the HPA.
    `credentials_secret` names the Secret of the pods' MLflow credentials."""
    version = str(track.version)
    labels = {**child_labels(isvc, MODEL_SERVER_COMPONENT), VERSION_LABEL: version}
    server = isvc.spec.server
    args = [
        "serve",
        f"--model-uri={track.model_uri}",
        f"--model-name={model_name}",
        f"--model-version={version}",
        # Pods share the node's ports on the local stack and a pod network elsewhere: the
        # pod's own address is right for both.
        "--host=$(POD_IP)",
        f"--port={SERVER_PORT}",
        f"--grpc-port={GRPC_PORT}",
    ]
    if server.batching is not None:
        args.append(f"--max-batch-size={server.batching.max_batch_size}")
        args.append(f"--max-batch-wait-ms={server.batching.max_latency_ms}")
        if server.batching.row_independent is not None:
            args.append(f"--row-independent={str(server.batching.row_independent).lower()}")
    env: list[dict[str, Any]] = [dict(POD_IP_ENV)]
    if tracking_uri is not None:
        env.extend(mlflow_env(tracking_uri, credentials_secret))
    container: dict[str, Any] = {
        "name": "server",
        "image": server.image or image,
        "command": ["mlcycle"],
        "args": args,
        "env": env,
        "ports": [
            {"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"},
            {"name": GRPC_PORT_NAME, "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
    }
    # A model server never calls the Kubernetes API: no token to steal from it.
    pod = with_overlay(
        {"automountServiceAccountToken": False, "containers": [container]}, container, server
    )
    spec: dict[str, Any] = {
        "selector": {"matchLabels": version_selector(isvc, version)},
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(isvc, version_name(isvc, version), labels),
        "spec": spec,
    }


def server_service(isvc: InferenceService, version: str) -> dict[str, Any]:
    labels = {**child_labels(isvc, MODEL_SERVER_COMPONENT), VERSION_LABEL: version}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(isvc, version_name(isvc, version), labels),
        "spec": {
            "selector": version_selector(isvc, version),
            "ports": service_ports(),
        },
    }


def server_autoscaler(isvc: InferenceService, version: str) -> dict[str, Any] | None:
    server = isvc.spec.server
    if server.min_replicas is None or server.max_replicas is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(
            isvc, child_name(isvc), child_labels(isvc, MODEL_SERVER_COMPONENT)
        ),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": version_name(isvc, version),
            },
            "minReplicas": server.min_replicas,
            "maxReplicas": server.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


def server_children(
    isvc: InferenceService,
    plan: RolloutPlan,
    model_name: str,
    tracking_uri: str | None,
    image: str = DEFAULT_IMAGE,
    credentials_secret: str | None = None,
) -> list[dict[str, Any]]:
    """Deployment and Service of every version the plan serves, and the stable's HPA."""
    replicas = desired_replicas(isvc, plan)
    autoscaled = isvc.spec.server.min_replicas is not None
    children: list[dict[str, Any]] = []
    for track in (plan.stable, plan.canary):
        if track is None or track.version is None:
            continue
        is_stable = track is plan.stable
        count = None if autoscaled and is_stable else replicas.get(track.version)
        children.append(server_service(isvc, track.version))
        children.append(
            server_deployment(
                isvc, track, model_name, count, tracking_uri, image, credentials_secret
            )
        )
    if plan.stable is not None and plan.stable.version is not None:
        autoscaler = server_autoscaler(isvc, plan.stable.version)
        if autoscaler is not None:
            children.append(autoscaler)
    return children


def versions_served(plan: RolloutPlan) -> set[str]:
    return {
        track.version
        for track in (plan.stable, plan.canary)
        if track is not None and track.version is not None
    }


def stale_server_children(
    deployments: Sequence[Mapping[str, Any]], plan: RolloutPlan
) -> list[tuple[str, str]]:
    """(kind, name) of server Deployments and Services whose version is no longer served."""
    keep = versions_served(plan)
    stale: list[tuple[str, str]] = []
    for deployment in deployments:
        metadata = deployment.get("metadata") or {}
        labels = metadata.get("labels") or {}
        if labels.get(COMPONENT_LABEL) != MODEL_SERVER_COMPONENT:
            continue
        if labels.get(VERSION_LABEL) in keep:
            continue
        stale.append(("Deployment", str(metadata.get("name"))))
        stale.append(("Service", str(metadata.get("name"))))
    return stale
