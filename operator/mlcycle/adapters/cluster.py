"""Children and status of our objects in the Kubernetes API: apply, read, delete."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError as DynamicNotFoundError
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from urllib3.exceptions import HTTPError

from mlcycle.adapters.errors import InvalidError, KindNotServedError, UnavailableError

FIELD_MANAGER = "mlcycle-operator"


def _status_message(error: ApiException) -> str:
    try:
        message = json.loads(error.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or error.reason or error.status)


def _is_server_side_failure(error: Exception) -> bool:
    if isinstance(error, ApiException):
        return error.status is None or error.status >= 500 or error.status == 429
    return isinstance(error, HTTPError | OSError)


class ClusterClient:
    """Synchronous; the reconcilers call it through asyncio.to_thread."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._dynamic = DynamicClient(api_client)
        self._api_client = api_client

    def _resource(self, api_version: str, kind: str) -> Any:
        return self._dynamic.resources.get(api_version=api_version, kind=kind)

    def _call(self, action: str, call: Any) -> Any:
        try:
            return call()
        except (ApiException, HTTPError, OSError) as error:
            if _is_server_side_failure(error):
                raise UnavailableError("kubernetes", f"{action}: {type(error).__name__}") from error
            raise

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply under one field manager: the API server merges, we never
        read-modify-write, and fields other controllers own are left alone."""
        api_version, kind = manifest["apiVersion"], manifest["kind"]
        try:
            resource = self._resource(api_version, kind)
        except ResourceNotFoundError as error:
            raise KindNotServedError(api_version, kind) from error
        metadata = manifest["metadata"]
        action = f"apply {kind} {metadata.get('namespace')}/{metadata['name']}"
        try:
            applied = self._call(
                action,
                lambda: resource.server_side_apply(
                    body=dict(manifest),
                    name=metadata["name"],
                    namespace=metadata.get("namespace"),
                    field_manager=FIELD_MANAGER,
                    force_conflicts=True,
                ),
            )
        except ApiException as error:
            # What the API server refuses (a schema, a webhook, a quota) it explains.
            raise InvalidError(f"{action}: {_status_message(error)}") from error
        result: dict[str, Any] = applied.to_dict()
        return result

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        resource = self._resource(api_version, kind)
        try:
            found = self._call(
                f"get {kind} {namespace}/{name}",
                lambda: resource.get(name=name, namespace=namespace),
            )
        except (ApiException, DynamicNotFoundError) as error:
            if getattr(error, "status", None) == 404:
                return None
            raise
        result: dict[str, Any] = found.to_dict()
        return result

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        resource = self._resource(api_version, kind)
        listed = self._call(
            f"list {kind} in {namespace}",
            lambda: resource.get(namespace=namespace, label_selector=label_selector),
        )
        return [item.to_dict() for item in listed.items]

    def delete(
        self, api_version: str, kind: str, namespace: str, name: str, *, uid: str | None = None
    ) -> None:
        """Delete in the background (garbage collection removes dependents such as pods);
        with `uid`, only that incarnation of the object."""
        resource = self._resource(api_version, kind)
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        try:
            self._call(
                f"delete {kind} {namespace}/{name}",
                lambda: resource.delete(name=name, namespace=namespace, body=body),
            )
        except (ApiException, DynamicNotFoundError) as error:
            if getattr(error, "status", None) not in (404, 409):
                raise

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the status subresource; returns the whole status as stored."""
        resource = self._resource(api_version, kind)
        patched = self._call(
            f"patch {kind} {namespace}/{name} status",
            lambda: resource.status.patch(
                body={"status": dict(status)},
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
            ),
        )
        stored: dict[str, Any] = patched.to_dict().get("status") or {}
        return stored
