"""The operator's Kubernetes API client for the calls kopf does not make, sized for the
operator's I/O threads.
"""

from __future__ import annotations

from kubernetes import client

from mlcycle import kubeaccess

# Threads the operator runs blocking adapter calls on.
IO_THREADS = 32


def kube_configuration() -> client.Configuration:
    # One connection per I/O thread (see run_operator); urllib3's default of 10 would open
    # and drop connections under a burst.
    return kubeaccess.kube_configuration(connection_pool_size=IO_THREADS)


def new_api_client() -> client.ApiClient:
    return client.ApiClient(kube_configuration())
