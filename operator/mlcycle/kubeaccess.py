"""How every mlcycle process reaches the Kubernetes API: in a pod its service account,
elsewhere $KUBECONFIG.

The operator and the router both need it, and neither may import the other's layers, so
it sits below both.
"""

from __future__ import annotations

import os

from kubernetes import client, config

_SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def kube_configuration(connection_pool_size: int | None = None) -> client.Configuration:
    """In a pod: its service account. Elsewhere: $KUBECONFIG, read now.

    The kubernetes client reads $KUBECONFIG once, at import time; a process started
    in-process after the environment changed (as tests do) would otherwise fall back to
    ~/.kube/config and talk to whatever cluster that names.
    """
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(_SERVICE_ACCOUNT_TOKEN):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"),
            client_configuration=configuration,
            persist_config=False,
        )
    if connection_pool_size is not None:
        configuration.connection_pool_maxsize = connection_pool_size
    return configuration


def new_api_client(connection_pool_size: int | None = None) -> client.ApiClient:
    return client.ApiClient(kube_configuration(connection_pool_size))
