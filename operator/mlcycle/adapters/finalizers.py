"""Releasing mlcycle's objects from its finalizer once the operator is gone.

`helm uninstall` removes the operator, and with it the only process that removes its
finalizer: objects, their namespaces and the CRDs would then wait forever to be deleted.
`mlcycle remove-finalizers` is that last step, run by whoever uninstalls.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from mlcycle.api.v1alpha1 import API_VERSION, FINALIZER, KINDS

# A concurrent writer (the GC, a user) changing the list between read and patch makes the
# JSON patch's `test` fail; the object is read again this many times.
_ATTEMPTS = 5


@dataclass(frozen=True)
class Released:
    kind: str
    namespace: str
    name: str


def remove_finalizers(
    api_client: client.ApiClient, namespaces: Sequence[str] = ()
) -> Iterator[Released]:
    """Removes mlcycle's finalizer, and only it, from every TrainingJob, ModelVersion and
    InferenceService in `namespaces` (all namespaces when empty); yields each released
    object. Finalizers of other controllers are kept."""
    dynamic = DynamicClient(api_client)
    for kind in KINDS:
        try:
            resource = dynamic.resources.get(api_version=API_VERSION, kind=kind.kind_name())
        except ResourceNotFoundError:
            continue  # the CRDs are gone already: nothing of this kind is left
        scopes: Sequence[str | None] = list(namespaces) or [None]
        for namespace in scopes:
            listed = resource.get(namespace=namespace) if namespace else resource.get()
            for item in listed.to_dict()["items"]:
                metadata = item["metadata"]
                if _release(resource, metadata["namespace"], metadata["name"], metadata):
                    yield Released(kind.kind_name(), metadata["namespace"], metadata["name"])


def _release(resource: Any, namespace: str, name: str, metadata: dict[str, Any]) -> bool:
    for _attempt in range(_ATTEMPTS):
        finalizers = list(metadata.get("finalizers") or [])
        if FINALIZER not in finalizers:
            return False
        patch = [
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {
                "op": "replace",
                "path": "/metadata/finalizers",
                "value": [each for each in finalizers if each != FINALIZER],
            },
        ]
        try:
            resource.patch(
                name=name,
                namespace=namespace,
                body=patch,
                content_type="application/json-patch+json",
            )
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            if error.status not in (409, 422):
                raise
        try:
            metadata = resource.get(name=name, namespace=namespace).to_dict()["metadata"]
        except ApiException as error:
            if error.status == 404:
                return False
            raise
    raise RuntimeError(f"{namespace}/{name} kept changing; run the command again")
