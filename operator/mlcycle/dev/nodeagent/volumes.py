"""What the kubelet would project into a pod's volumes, as files of its own: here only
the service-account token, as a kubeconfig the pod's processes find through `KUBECONFIG`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlcycle.dev.nodeagent.config import AgentConfig
from mlcycle.dev.nodeagent.envvars import ContainerConfigError
from mlcycle.dev.nodeagent.kubeclient import Api
from mlcycle.dev.nodeagent.podspec import PodView

SERVICE_ACCOUNT_TOKEN_SECONDS = 24 * 3600


def wants_service_account_token(pod: PodView) -> bool:
    return bool(pod.service_account_name) and pod.automount_service_account_token


def service_account_kubeconfig(
    apiserver_host: str, apiserver_port: int, ca_file: str | None, namespace: str, token: str
) -> dict[str, Any]:
    """A kubeconfig holding a pod's service-account token.

    The kubelet mounts the token at /var/run/secrets/kubernetes.io/serviceaccount; pods
    here are processes sharing one filesystem, so each gets its own file and `KUBECONFIG`
    instead, which every Kubernetes client library reads. The pod then acts with its
    service account's RBAC, as on a real node."""
    cluster: dict[str, Any] = {"server": f"https://{apiserver_host}:{apiserver_port}"}
    if ca_file:
        cluster["certificate-authority"] = ca_file
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": "service-account", "user": {"token": token}}],
        "contexts": [
            {
                "name": "pod",
                "context": {
                    "cluster": "cluster",
                    "user": "service-account",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "pod",
    }


def service_account_env(
    api: Api, config: AgentConfig, pod: PodView, pod_dir: Path
) -> dict[str, str]:
    """`KUBECONFIG` naming the pod's service-account kubeconfig, written on first use."""
    if not wants_service_account_token(pod):
        return {}
    path = pod_dir / "serviceaccount.kubeconfig"
    if not path.exists():
        token = api.service_account_token(
            pod.namespace, pod.service_account_name, pod, SERVICE_ACCOUNT_TOKEN_SECONDS
        )
        if token is None:
            raise ContainerConfigError(f'serviceaccount "{pod.service_account_name}" not found')
        kubeconfig = service_account_kubeconfig(
            config.apiserver_host, config.apiserver_port, config.ca_file, pod.namespace, token
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(kubeconfig, handle)
    return {"KUBECONFIG": str(path)}
