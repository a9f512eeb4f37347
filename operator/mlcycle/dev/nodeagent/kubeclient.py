"""The agent's calls to the kube-apiserver, on plain JSON."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterator, Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from mlcycle.dev.nodeagent.podspec import PodView
from mlcycle.dev.nodeagent.timestamps import micro_time

NODE_LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
MERGE_PATCH = "application/merge-patch+json"
WATCH_TIMEOUT_SECONDS = 240


class Api:
    """The handful of calls the agent makes, on plain JSON so the pure layer sees the wire
    format (camelCase) and not the client's models."""

    def __init__(self, api_client: Any) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.coordination = k8s.CoordinationV1Api(api_client)
        self.version = k8s.VersionApi(api_client)

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(response.data)
        return result

    def server_version(self) -> str:
        version = str(self.version.get_code().git_version)
        # An apiserver built without the release ldflags reports "v0.0.0-master+$Format:%H$";
        # keep a node's kubeletVersion a parseable semver anyway.
        return version if "$" not in version else "v0.0.0-local"

    def read_node(self, name: str) -> dict[str, Any] | None:
        try:
            return self._json(self.core.read_node(name, _preload_content=False))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def service_account_token(
        self, namespace: str, account: str, pod: PodView, expiration_seconds: int
    ) -> str | None:
        """A token bound to the pod (TokenRequest, as the kubelet asks for its projected
        volume); None when the service account does not exist (yet)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": expiration_seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod.name,
                    "uid": pod.uid,
                },
            },
        }
        try:
            response = self._json(
                self.core.create_namespaced_service_account_token(
                    account, namespace, body, _preload_content=False
                )
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return str(response["status"]["token"])

    def create_node(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._json(self.core.create_node(body, _preload_content=False))

    def patch_node(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._json(
            self.core.patch_node(name, body, _content_type=MERGE_PATCH, _preload_content=False)
        )

    def patch_node_status(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._json(
            self.core.patch_node_status(
                name, body, _content_type=MERGE_PATCH, _preload_content=False
            )
        )

    def renew_lease(self, node: Mapping[str, Any], now: datetime.datetime) -> None:
        name = node["metadata"]["name"]
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": micro_time(now),
        }
        try:
            self.coordination.patch_namespaced_lease(
                name, NODE_LEASE_NAMESPACE, {"spec": spec}, _content_type=MERGE_PATCH
            )
        except ApiException as error:
            if error.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": NODE_LEASE_NAMESPACE,
                    # Garbage-collected with the Node, as the kubelet's lease is.
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": name,
                            "uid": node["metadata"]["uid"],
                        }
                    ],
                },
                "spec": {**spec, "acquireTime": micro_time(now)},
            }
            self.coordination.create_namespaced_lease(NODE_LEASE_NAMESPACE, body)

    def list_pods(self, node_name: str) -> dict[str, Any]:
        return self._json(
            self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node_name}", _preload_content=False
            )
        )

    def watch_pods(self, node_name: str, resource_version: str) -> Iterator[dict[str, Any]]:
        response = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node_name}",
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=resource_version,
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            _preload_content=False,
            # A read timeout past the server's own end of the watch finds dead connections.
            _request_timeout=(10, WATCH_TIMEOUT_SECONDS + 30),
        )
        try:
            pending = b""
            for chunk in response.stream(amt=None, decode_content=False):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.close()
            response.release_conn()

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._json(
                self.core.read_namespaced_pod(name, namespace, _preload_content=False)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch_pod_status(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self._json(
            self.core.patch_namespaced_pod_status(
                name, namespace, body, _content_type=MERGE_PATCH, _preload_content=False
            )
        )

    def delete_pod_now(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet's final delete: no grace left, and only this incarnation of the pod."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            self.core.delete_namespaced_pod(name, namespace, body=body)
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            secret = self._json(
                self.core.read_namespaced_secret(name, namespace, _preload_content=False)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        # surrogateescape keeps non-UTF-8 bytes intact through to the process environment.
        return {
            key: base64.b64decode(value).decode("utf-8", errors="surrogateescape")
            for key, value in (secret.get("data") or {}).items()
        }

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            config_map = self._json(
                self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(config_map.get("data") or {})
