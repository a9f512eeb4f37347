"""replicas mode on the local cluster: one Service selecting both tracks' pods gets every
ready pod of both Deployments in its EndpointSlices (the controller-manager's own
EndpointSlice controller), so the split is the ratio of ready replicas."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from mlcycle.api.v1alpha1 import InferenceService
from mlcycle.plan.serving_names import VERSION_LABEL, model_server_selector
from mlcycle.plan.traffic.replicas import desired_shared_service, effective_weight, replica_split
from tests.builders import an_inference_service
from tests.harness import Kubectl, eventually
from tests.integration.objects import applied

pytestmark = pytest.mark.integration

PORT = 8080


def _track_deployment(isvc: InferenceService, track: str, replicas: int) -> dict[str, Any]:
    """A stand-in model server per track: what matters here is the labels and readiness."""
    pod_labels = {**model_server_selector(isvc), VERSION_LABEL: track}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"iris-{track}", "namespace": isvc.metadata.namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "server",
                            "image": "ignored",
                            "command": [
                                "python",
                                "-m",
                                "http.server",
                                "--bind",
                                "$(POD_IP)",
                                str(PORT),
                            ],
                            "env": [
                                {
                                    "name": "POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                }
                            ],
                            "ports": [{"name": "http", "containerPort": PORT}],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": "http"},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


def _ready_pod_ips(kubectl: Kubectl, namespace: str, track: str) -> set[str]:
    pods = json.loads(
        kubectl(
            "get", "pods", "-n", namespace, "-l", f"{VERSION_LABEL}={track}", "-o", "json"
        ).stdout
    )["items"]
    return {
        pod["status"]["podIP"]
        for pod in pods
        if any(
            condition["type"] == "Ready" and condition["status"] == "True"
            for condition in pod["status"].get("conditions", [])
        )
    }


def _ready_endpoint_addresses(kubectl: Kubectl, namespace: str, service: str) -> set[str]:
    slices = json.loads(
        kubectl(
            "get",
            "endpointslices",
            "-n",
            namespace,
            "-l",
            f"kubernetes.io/service-name={service}",
            "-o",
            "json",
        ).stdout
    )["items"]
    return {
        address
        for endpoint_slice in slices
        for endpoint in endpoint_slice.get("endpoints") or []
        if endpoint.get("conditions", {}).get("ready")
        for address in endpoint["addresses"]
    }


def test_shared_service_spans_both_tracks(kubectl: Kubectl, namespace: str) -> None:
    isvc = applied(
        kubectl,
        namespace,
        an_inference_service("iris")
        .model("iris", version=1)
        .replicas(3)
        .traffic("replicas")
        .rollout(capacity="neutral"),
    )
    stable_replicas, canary_replicas = replica_split(
        isvc.spec.server.replicas, 33, capacity=isvc.spec.rollout.capacity, stable_replicas=3
    )
    assert (stable_replicas, canary_replicas) == (2, 1)

    service = desired_shared_service(isvc)
    for manifest in (
        service,
        _track_deployment(isvc, "stable", stable_replicas),
        _track_deployment(isvc, "canary", canary_replicas),
    ):
        kubectl("apply", "--server-side", "-f", "-", input_text=json.dumps(manifest))

    def both_tracks_ready() -> tuple[set[str], set[str]] | None:
        stable = _ready_pod_ips(kubectl, namespace, "stable")
        canary = _ready_pod_ips(kubectl, namespace, "canary")
        ready = len(stable) == stable_replicas and len(canary) == canary_replicas
        return (stable, canary) if ready else None

    stable_ips, canary_ips = eventually(
        "2 stable and 1 canary pods Ready", both_tracks_ready, timeout=120, interval=0.5
    )
    service_name = service["metadata"]["name"]
    endpoints = eventually(
        "the shared Service's EndpointSlices listing all three pods",
        lambda: (
            addresses
            if (addresses := _ready_endpoint_addresses(kubectl, namespace, service_name))
            == stable_ips | canary_ips
            else None
        ),
        timeout=60,
    )
    assert effective_weight(len(endpoints & stable_ips), len(endpoints & canary_ips)) == 33
    for address in endpoints:
        with urllib.request.urlopen(f"http://{address}:{PORT}/", timeout=10) as response:
            assert response.status == 200
