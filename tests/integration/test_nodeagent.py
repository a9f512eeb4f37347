"""The node agent against the real control plane: the scheduler binds to its Node, the
controller-manager drives Jobs over pods it runs, and pod status tells the truth."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import eventually

pytestmark = pytest.mark.integration

PYTHON_EXIT_0 = ["python", "-c", "import sys; sys.exit(0)"]


class Cluster:
    """Plain-JSON access to one test namespace, so assertions read like the API."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.namespace = namespace

    def create_pod(
        self, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None
    ) -> None:
        metadata = {"name": name, "labels": labels or {}}
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
        self.core.create_namespaced_pod(self.namespace, body)

    def pod(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            response = self.core.read_namespaced_pod(name, self.namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        result: dict[str, Any] = json.loads(response.data)
        return result

    def pod_status(self, name: str) -> dict[str, Any]:
        pod = self.pod(name)
        assert pod is not None, f"pod {name} not found"
        status: dict[str, Any] = pod.get("status") or {}
        return status

    def wait_for_phase(self, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        return eventually(
            f"pod {self.namespace}/{name} phase {phase}",
            lambda: (status := self.pod_status(name)).get("phase") == phase and status,
            timeout=timeout,
        )


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    matching = [c for c in status.get("conditions") or [] if c["type"] == kind]
    return matching[0] if matching else {}


def container_state(status: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = status["containerStatuses"][0]["state"]
    return state


@pytest.fixture
def cluster(stack: Any, kube_client: Any) -> Iterator[Cluster]:
    from kubernetes import client

    core = client.CoreV1Api(kube_client)
    name = f"na-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    # Pods are refused until the service-account controller has made `default`.
    eventually(
        f"service account default in {name}",
        lambda: core.read_namespaced_service_account("default", name),
    )
    try:
        yield Cluster(kube_client, name)
    finally:
        core.delete_namespace(name)


@pytest.fixture
def node_name(stack: Any) -> str:
    from mlcycle.dev.cluster import NODE_NAME

    return NODE_NAME


def test_node_offers_gpus_and_the_scheduler_binds_gpu_pods_to_it(
    cluster: Cluster, node_name: str
) -> None:
    node = json.loads(cluster.core.read_node(node_name, _preload_content=False).data)
    gpus = int(node["status"]["capacity"]["nvidia.com/gpu"])
    assert gpus >= 1
    assert condition(node["status"], "Ready")["status"] == "True"

    def gpu_pod(count: int) -> dict[str, Any]:
        return {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "ignored",
                    "command": PYTHON_EXIT_0,
                    "resources": {"limits": {"nvidia.com/gpu": str(count)}},
                }
            ],
        }

    cluster.create_pod("fits", gpu_pod(1))
    cluster.create_pod("too-big", gpu_pod(gpus + 1))
    cluster.wait_for_phase("fits", "Succeeded")
    fits = cluster.pod("fits")
    assert fits is not None
    assert fits["spec"]["nodeName"] == node_name

    scheduled = eventually(
        "too-big marked Unschedulable",
        lambda: (
            condition(cluster.pod_status("too-big"), "PodScheduled").get("reason")
            == "Unschedulable"
            and cluster.pod_status("too-big")
        ),
    )
    assert scheduled["phase"] == "Pending"
    assert "nvidia.com/gpu" in condition(scheduled, "PodScheduled")["message"]


def test_job_completes_through_the_controller_manager(cluster: Cluster) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "exits-zero"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "ignored", "command": PYTHON_EXIT_0}],
                }
            },
        },
    }
    cluster.batch.create_namespaced_job(cluster.namespace, job)

    def job_complete() -> bool:
        response = cluster.batch.read_namespaced_job_status(
            "exits-zero", cluster.namespace, _preload_content=False
        )
        status = json.loads(response.data).get("status") or {}
        return condition(status, "Complete").get("status") == "True"

    eventually("job exits-zero Complete", job_complete, timeout=90)


def test_failing_pod_ends_failed_with_its_exit_code(cluster: Cluster) -> None:
    cluster.create_pod(
        "exits-three",
        {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "ignored",
                    "command": ["python", "-c", "import sys; print('bye'); sys.exit(3)"],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }
            ],
        },
    )
    status = cluster.wait_for_phase("exits-three", "Failed")
    terminated = container_state(status)["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
    assert terminated["message"] == "bye\n"
    assert status["containerStatuses"][0]["restartCount"] == 0


def test_env_from_secret_and_pod_ip_reach_the_process(cluster: Cluster, stack: Any) -> None:
    cluster.core.create_namespaced_secret(
        cluster.namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}}
    )
    write_env = (
        "import os; "
        "open(os.environ['MLCYCLE_TERMINATION_MESSAGE_PATH'], 'w')"
        ".write(os.environ['TOKEN'] + ' ' + os.environ['POD_IP'] + ' ' + os.environ['HOSTNAME'])"
    )
    cluster.create_pod(
        "reads-env",
        {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "ignored",
                    "command": ["python", "-c", write_env],
                    "env": [
                        {
                            "name": "TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
                        },
                        {
                            "name": "POD_IP",
                            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                        },
                    ],
                }
            ],
        },
    )
    status = cluster.wait_for_phase("reads-env", "Succeeded")
    assert status["podIP"].startswith(stack.config().pod_ip_prefix + ".")
    assert container_state(status)["terminated"]["message"] == f"s3cr3t {status['podIP']} reads-env"


def test_a_pod_acts_as_its_service_account(cluster: Cluster) -> None:
    """The agent hands each pod a token bound to it, as the kubelet's projected volume
    does: the API server authenticates the pod as its service account, with its RBAC."""
    who_am_i = (
        "import os, json\n"
        "from kubernetes import client, config\n"
        "config.load_kube_config()\n"
        "api = client.ApiClient()\n"
        "review = client.AuthenticationV1Api(api).create_self_subject_review("
        "{'apiVersion': 'authentication.k8s.io/v1', 'kind': 'SelfSubjectReview'})\n"
        "try:\n"
        "    client.CoreV1Api(api).list_namespaced_secret(os.environ['POD_NAMESPACE'])\n"
        "    listed = 'allowed'\n"
        "except client.ApiException as error:\n"
        "    listed = str(error.status)\n"
        "open(os.environ['MLCYCLE_TERMINATION_MESSAGE_PATH'], 'w')"
        ".write(review.status.user_info.username + ' ' + listed)\n"
    )
    namespace_env = {
        "name": "POD_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    }
    container = {
        "name": "main",
        "image": "ignored",
        "command": ["python", "-c", who_am_i],
        "env": [namespace_env],
    }
    cluster.create_pod("who-am-i", {"restartPolicy": "Never", "containers": [container]})
    status = cluster.wait_for_phase("who-am-i", "Succeeded", timeout=90)
    message = container_state(status)["terminated"]["message"]
    # `default` may not list secrets: the pod is not the agent's administrator.
    assert message == f"system:serviceaccount:{cluster.namespace}:default 403"

    opted_out = {"restartPolicy": "Never", "automountServiceAccountToken": False}
    probe = "import os, sys; sys.exit(0 if 'KUBECONFIG' not in os.environ else 3)"
    cluster.create_pod(
        "no-token",
        {**opted_out, "containers": [{**container, "command": ["python", "-c", probe]}]},
    )
    cluster.wait_for_phase("no-token", "Succeeded", timeout=90)


def test_missing_secret_and_missing_command_are_reported_as_waiting(cluster: Cluster) -> None:
    cluster.create_pod(
        "no-secret",
        {
            "containers": [
                {
                    "name": "main",
                    "image": "ignored",
                    "command": PYTHON_EXIT_0,
                    "env": [
                        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}
                    ],
                }
            ]
        },
    )
    cluster.create_pod("no-command", {"containers": [{"name": "main", "image": "busybox"}]})

    def waiting_reason(name: str) -> str:
        statuses = cluster.pod_status(name).get("containerStatuses") or [{}]
        reason: str = statuses[0].get("state", {}).get("waiting", {}).get("reason", "")
        return reason

    eventually(
        "no-secret CreateContainerConfigError",
        lambda: waiting_reason("no-secret") == "CreateContainerConfigError",
    )
    eventually(
        "no-command CreateContainerError",
        lambda: waiting_reason("no-command") == "CreateContainerError",
    )


def test_readiness_probe_makes_the_pod_ready_and_deletion_kills_it(cluster: Cluster) -> None:
    cluster.core.create_namespaced_service(
        cluster.namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    cluster.create_pod(
        "web",
        {
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "web",
                    "image": "ignored",
                    "command": ["python", "-m", "http.server", "--bind", "$(POD_IP)", "8080"],
                    "env": [
                        {
                            "name": "POD_IP",
                            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                        }
                    ],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {
                        "httpGet": {"path": "/", "port": "http"},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
        labels={"app": "web"},
    )
    eventually(
        "pod web Ready",
        lambda: condition(cluster.pod_status("web"), "Ready").get("status") == "True",
    )
    status = cluster.pod_status("web")
    assert status["containerStatuses"][0]["ready"] is True
    pid = int(status["containerStatuses"][0]["containerID"].removeprefix("local://"))
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"http.server" in cmdline
    assert status["podIP"].encode() in cmdline

    # Services get endpoints as in a real cluster: the controller-manager's EndpointSlice
    # controller takes the Ready pod's IP (the API server refuses loopback addresses there,
    # hence the stack's own pod network), and that address answers on this machine.
    from kubernetes import client

    discovery = client.DiscoveryV1Api(cluster.core.api_client)

    def ready_addresses() -> list[str]:
        slices = discovery.list_namespaced_endpoint_slice(
            cluster.namespace, label_selector="kubernetes.io/service-name=web"
        ).items
        return [
            address
            for endpoint_slice in slices
            for endpoint in endpoint_slice.endpoints or []
            if endpoint.conditions and endpoint.conditions.ready
            for address in endpoint.addresses
        ]

    assert eventually("an EndpointSlice with the pod", ready_addresses) == [status["podIP"]]
    with urllib.request.urlopen(f"http://{status['podIP']}:8080/", timeout=10) as response:
        assert response.status == 200

    cluster.core.delete_namespaced_pod("web", cluster.namespace)
    eventually("pod web removed by the agent's final delete", lambda: cluster.pod("web") is None)
    eventually(
        f"process {pid} gone",
        lambda: (
            not Path(f"/proc/{pid}").exists()
            or b"http.server" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        ),
        timeout=10,
    )
