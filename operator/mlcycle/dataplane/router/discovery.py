"""What the cluster says: the router's ConfigMap and the EndpointSlices of its namespace.

The kubernetes client blocks, so each watch runs in a thread of its own and hands every
change to the event loop with `call_soon_threadsafe`; the loop never waits on the API.
A watch lists first, then follows from the list's resourceVersion (resumed from the last
event's when it times out), and lists again when its history expired (410 Gone) or the
connection failed, so no change is missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from mlcycle.dataplane.router.table import DiscoveredEndpoint, ready_endpoints
from mlcycle.kubeaccess import new_api_client as kube_api_client

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
WATCH_TIMEOUT_SECONDS = 60
RETRY_SECONDS = (0.5, 1, 2, 5, 10)

__all__ = ["ClusterWatches", "kube_api_client"]

ConfigHandler = Callable[[str | None], object]
EndpointsHandler = Callable[[str, tuple[DiscoveredEndpoint, ...]], None]


class ClusterWatches:
    """Follows one ConfigMap key and the namespace's EndpointSlices until stopped."""

    def __init__(
        self,
        api: client.ApiClient,
        loop: asyncio.AbstractEventLoop,
        *,
        namespace: str,
        configmap: str,
        key: str,
        on_config: ConfigHandler,
        on_endpoints: EndpointsHandler,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._discovery = client.DiscoveryV1Api(api)
        self._loop = loop
        self._namespace = namespace
        self._configmap = configmap
        self._key = key
        self._on_config = on_config
        self._on_endpoints = on_endpoints
        self._stopped = threading.Event()
        self._slices: dict[str, dict[str, Any]] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for name, target in (
            ("configmap", self._follow_configmap),
            ("endpointslices", self._follow_endpoint_slices),
        ):
            thread = threading.Thread(target=target, name=f"router-watch-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        # The threads notice between events or when their watch times out; they are
        # daemons, so a process exiting never waits for them.
        self._stopped.set()

    # --- the ConfigMap ---------------------------------------------------------------

    def _follow_configmap(self) -> None:
        def on_items(items: list[dict[str, Any]]) -> None:
            self._config_changed(items[0] if items else None)

        def on_event(kind: str, configmap: dict[str, Any]) -> None:
            self._config_changed(None if kind == "DELETED" else configmap)

        self._follow(
            "configmap",
            self._core.list_namespaced_config_map,
            {"field_selector": f"metadata.name={self._configmap}"},
            on_items,
            on_event,
        )

    def _config_changed(self, configmap: Mapping[str, Any] | None) -> None:
        text = None if configmap is None else (configmap.get("data") or {}).get(self._key)
        self._loop.call_soon_threadsafe(self._on_config, text)

    # --- EndpointSlices --------------------------------------------------------------

    def _follow_endpoint_slices(self) -> None:
        def on_items(items: list[dict[str, Any]]) -> None:
            services = {_service_of(s) for s in self._slices.values()}
            self._slices = {s["metadata"]["name"]: s for s in items}
            services |= {_service_of(s) for s in items}
            for service in services:
                self._publish(service)

        def on_event(kind: str, endpoint_slice: dict[str, Any]) -> None:
            name = endpoint_slice["metadata"]["name"]
            if kind == "DELETED":
                self._slices.pop(name, None)
            else:
                self._slices[name] = endpoint_slice
            self._publish(_service_of(endpoint_slice))

        self._follow(
            "endpointslices",
            self._discovery.list_namespaced_endpoint_slice,
            {"label_selector": SERVICE_NAME_LABEL},
            on_items,
            on_event,
        )

    def _publish(self, service: str) -> None:
        endpoints = ready_endpoints(s for s in self._slices.values() if _service_of(s) == service)
        self._loop.call_soon_threadsafe(self._on_endpoints, service, endpoints)

    # --- list, then watch ------------------------------------------------------------

    def _follow(
        self,
        what: str,
        list_call: Callable[..., Any],
        selector: dict[str, str],
        on_items: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
    ) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                listing = list_call(self._namespace, **selector, _preload_content=False)
                document = _json(listing.data)
                on_items(document.get("items") or [])
                version: str = document["metadata"]["resourceVersion"]
                failures = 0
                # Follow from where the list (then the last event) left off; a watch that
                # times out is resumed, not relisted.
                while not self._stopped.is_set():
                    stream = watch.Watch()
                    for event in stream.stream(
                        list_call,
                        self._namespace,
                        **selector,
                        resource_version=version,
                        timeout_seconds=WATCH_TIMEOUT_SECONDS,
                        allow_watch_bookmarks=True,
                    ):
                        if self._stopped.is_set():
                            stream.stop()
                            return
                        if event["type"] != "BOOKMARK":
                            on_event(event["type"], event["raw_object"])
                    version = stream.resource_version or version
            except ApiException as error:
                if error.status != 410:  # 410 Gone: history expired, list again
                    failures += 1
                    log.warning(f"{what} watch failed: {error.status} {error.reason}")
            except Exception as error:  # the API server restarting, a dropped connection
                failures += 1
                log.warning(f"{what} watch failed: {error!r}")
            if failures:
                self._stopped.wait(RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1])


def _service_of(endpoint_slice: Mapping[str, Any]) -> str:
    labels = (endpoint_slice.get("metadata") or {}).get("labels") or {}
    return str(labels.get(SERVICE_NAME_LABEL, ""))


def _json(data: bytes) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(data)
    return document
