"""kopf's peering objects, where the operator's replicas meet: created at startup (kopf
never creates them), and read by the operator's own standby check.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

PEERING_GROUP = "kopf.dev"
PEERING_VERSION = "v1"


def ensure_peering_objects(
    api: client.ApiClient, peering_name: str, namespaces: Iterable[str]
) -> None:
    """Create the peering object(s) replicas meet in.

    kopf treats a named peering as mandatory and keeps the operator paused until it sees
    the object, but never creates it; without this a fresh install would sit idle.
    """
    custom = client.CustomObjectsApi(api)
    namespace_list = list(namespaces)
    body_kind = "KopfPeering" if namespace_list else "ClusterKopfPeering"
    body = {
        "apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}",
        "kind": body_kind,
        "metadata": {"name": peering_name, "labels": {"app.kubernetes.io/part-of": "mlcycle"}},
    }
    if not namespace_list:
        _create_unless_exists(
            lambda: custom.create_cluster_custom_object(
                PEERING_GROUP, PEERING_VERSION, "clusterkopfpeerings", body
            )
        )
    for namespace in namespace_list:
        _create_unless_exists(
            functools.partial(
                custom.create_namespaced_custom_object,
                PEERING_GROUP,
                PEERING_VERSION,
                namespace,
                "kopfpeerings",
                body,
            )
        )


def _create_unless_exists(create: Callable[[], object]) -> None:
    try:
        create()
    except ApiException as error:
        if error.status != 409:  # already there: another replica or the Helm chart made it
            raise


def read_peerings(
    api: client.ApiClient, peering_name: str, namespaces: Iterable[str]
) -> list[dict[str, Any]] | None:
    """The `status` of each peering object replicas meet in (one entry per peer), or None
    while one is missing: kopf keeps a named peering mandatory and stays paused then."""
    custom = client.CustomObjectsApi(api)
    namespace_list = list(namespaces)
    reads: list[Callable[[], Any]] = (
        [
            functools.partial(
                custom.get_namespaced_custom_object,
                PEERING_GROUP,
                PEERING_VERSION,
                namespace,
                "kopfpeerings",
                peering_name,
            )
            for namespace in namespace_list
        ]
        if namespace_list
        else [
            functools.partial(
                custom.get_cluster_custom_object,
                PEERING_GROUP,
                PEERING_VERSION,
                "clusterkopfpeerings",
                peering_name,
            )
        ]
    )
    statuses: list[dict[str, Any]] = []
    for read in reads:
        try:
            found = read()
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        statuses.append(dict(found.get("status") or {}))
    return statuses
